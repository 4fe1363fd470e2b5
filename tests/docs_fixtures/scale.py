"""What docs/scale.md's blocks assume: a Ray their ``ray.init`` can start, whose worker processes import this
checkout's deepscope.

Under pytest the page runs in the tests' Ray session (conftest's ``ray_module``, started before this fixture: a Ray
start is 5-10 s here), which the page's ``ray.init`` finds: its arguments are checked against ``ray.init``'s
signature, and the session is kept. The page's ``ray.shutdown`` then ends what the page started on it, the warm actor
pool, as a real shutdown would, and keeps the session for the other Ray tests. Without a running session (the page
run alone), ``ray.init`` starts one, handing the workers this checkout's path: the blocks run in a temporary directory
with the environment restored after each, so a relative PYTHONPATH (``src``) would not reach them.
"""

import inspect
from pathlib import Path
from typing import Any

import ray

import deepscope
from deepscope.engine import close_pools

_init, _shutdown = ray.init, ray.shutdown
_here = str(Path(deepscope.__file__).resolve().parents[1])
_shared = ray.is_initialized()


def _init_with_this_checkout(*args: Any, **kwargs: Any) -> Any:
    if _shared:
        inspect.signature(_init).bind(*args, **kwargs)  # a TypeError for what ray.init would refuse
        return None
    kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": _here}})
    return _init(*args, **kwargs)


def _shutdown_the_page_s_ray(*args: Any, **kwargs: Any) -> None:
    inspect.signature(_shutdown).bind(*args, **kwargs)
    if _shared:
        close_pools()
    else:
        _shutdown(*args, **kwargs)


ray.init = _init_with_this_checkout
ray.shutdown = _shutdown_the_page_s_ray


def docs_teardown() -> None:
    ray.init, ray.shutdown = _init, _shutdown
    if not _shared and ray.is_initialized():
        ray.shutdown()
