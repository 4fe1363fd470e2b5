"""What docs/scale.md's blocks assume: Ray's worker processes import this checkout's deepscope. The blocks run in
a temporary directory with the environment restored after each, so a relative PYTHONPATH (``src``) would not
reach the workers: the page's ``ray.init`` hands them this checkout's path (restored by docs_teardown)."""

from pathlib import Path
from typing import Any

import ray

import deepscope

_init = ray.init
_here = str(Path(deepscope.__file__).resolve().parents[1])


def _init_with_this_checkout(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": _here}})
    return _init(*args, **kwargs)


ray.init = _init_with_this_checkout


def docs_teardown() -> None:
    ray.init = _init
    if ray.is_initialized():
        ray.shutdown()
