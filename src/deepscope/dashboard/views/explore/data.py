"""What the Explore view answers: the worker's offer, a job started and polled, a result's pictures.

Results are cached in the run's own folder (``<run>/explore/<key>/``), so only a board over a directory of runs
explores; a PostgreSQL store's runs have no folder to keep them in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ....errors import BadInputError
from ...common import NotFound, Served, open_reader, source_of
from ...sources import Directory, run_dir
from .jobs import FILES, Explorer

KEY = re.compile(r"[0-9a-f]{32}")


class ExploreState:
    """The view's per-app state: the explorer, once the board is given a model (:func:`configure`)."""

    def __init__(self) -> None:
        self.explorer: Explorer | None = None


def configure(app: Any, spec: dict[str, Any], timeout: float = 60.0) -> Explorer:
    """Give a board's app a model to explore with: ``spec`` is ``{"model": ..., "data": ...}`` as
    :mod:`deepscope.explore.worker` takes it. The worker starts on the first request."""
    explorer = Explorer(spec, timeout=timeout)
    app.state.views["explore"].explorer = explorer
    return explorer


def _explorer(state: ExploreState) -> Explorer:
    if state.explorer is None:
        raise NotFound("this board explores nothing: start it with a model (deepscope board DIR --model ...)")
    return state.explorer


def _run_dir(root: Served, run: str) -> Path:
    served = source_of(root)
    if not isinstance(served, Directory):
        raise NotFound("the explorer keeps its results in a run's folder: serve a directory of runs")
    return run_dir(served.root, run)


def info(state: ExploreState) -> dict[str, Any]:
    """``{"methods", "items", "labels", "classes"}``: what the worker offers."""
    return _explorer(state).info()


def start(root: Served, state: ExploreState, client: str, body: Any) -> dict[str, Any]:
    """Start (or find in the cache) the job ``body`` asks for: ``{"run", "item", "method", "target", "layer",
    "step"}`` (``step``: a checkpoint's; default the run's last one, or the model as made when it has none)."""
    explorer = _explorer(state)
    if not isinstance(body, dict) or not isinstance(body.get("run"), str):
        raise BadInputError('send {"run", "item", "method", "target", "layer", "step"} as JSON')
    run = body["run"]
    directory = _run_dir(root, run)
    offer = explorer.info()
    item, method = body.get("item"), body.get("method")
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < offer["items"]:
        raise BadInputError(f"item {item!r}: choose 0 to {offer['items'] - 1}")
    if method not in offer["methods"]:
        raise BadInputError(f"unknown method {method!r}; known: {', '.join(offer['methods'])}")
    target, layer = body.get("target"), body.get("layer") or None
    if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 0):
        raise BadInputError(f"target {target!r}: a class index, or null for the predicted class")
    if layer is not None and not isinstance(layer, str):
        raise BadInputError(f"layer {layer!r}: a name from model.named_modules(), or null")
    with open_reader(root, run) as reader:
        steps = reader.checkpoints()
    step = body.get("step")
    if step is None:
        step = steps[-1] if steps else None
    elif step not in steps:
        raise BadInputError(f"run {run!r} has no checkpoint at step {step!r}; its steps: {steps}")
    request = {"item": item, "method": method, "target": target, "layer": layer}
    return _with_urls(explorer.submit(client, run, directory, step, request).answer(None))


def status(state: ExploreState, job: str) -> dict[str, Any]:
    return _with_urls(_explorer(state).status(job))


def result_file(root: Served, run: str, key: str, name: str) -> Path:
    """A result's picture, from the run's ``explore/<key>/`` only."""
    if not KEY.fullmatch(key) or name not in FILES:
        raise NotFound(f"no result {key!r}/{name!r}")
    path = _run_dir(root, run) / "explore" / key / name
    if not path.is_file():
        raise NotFound(f"no result {key!r}/{name!r}")
    return path


def _with_urls(answer: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import urlencode

    if answer["result"] is not None:
        answer["urls"] = {
            name.removesuffix(".png"): "api/explore/file?"
            + urlencode({"run": answer["run"], "key": answer["key"], "name": name})
            for name in FILES
        }
    return answer
