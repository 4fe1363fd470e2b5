"""What the Explore view answers: the worker's offer, a job started and polled, a result's pictures.

Results are cached in the run's own folder (``<run>/explore/<key>/``), so only a board over a directory of runs
explores; a PostgreSQL store's runs have no folder to keep them in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ....errors import BadInputError
from ...common import NotFound, Served, open_reader, source_of
from ...sources import Directory, run_dir
from .jobs import FILE, FILES, Explorer

KEY = re.compile(r"[0-9a-f]{32}")
MAX_UPLOAD = 4 * 1024 * 1024  # an uploaded image's bytes
MAX_UPLOAD_BODY = MAX_UPLOAD * 4 // 3 + 64 * 1024  # its JSON body: the bytes in base64, and the rest
MAX_METHODS = 6  # methods side by side in one job
# The first bytes of the image formats an upload may be (checked here; PIL decodes it in the worker).
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


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


def upload(root: Served, state: ExploreState, body: Any) -> dict[str, Any]:
    """Keep an uploaded image, ``{"run", "image": base64}``, in the run's ``explore/uploads/`` under the hash of its
    bytes (a name the board makes; the client's file name is never used); answers ``{"upload", "bytes"}``, the name
    a job's ``upload`` gives. The bytes are only checked to start like a PNG, JPEG, GIF, BMP or WebP file here:
    the worker decodes them (with PIL), never the web server."""
    _explorer(state)
    if not isinstance(body, dict) or not isinstance(body.get("run"), str) or not isinstance(body.get("image"), str):
        raise BadInputError('send {"run", "image": the image file\'s bytes in base64} as JSON')
    directory = _run_dir(root, body["run"])
    try:
        image = base64.b64decode(body["image"].split(",", 1)[-1], validate=True)  # a data: URL's prefix allowed
    except (ValueError, binascii.Error):
        raise BadInputError("image: not base64 (send the file's bytes in base64, or a data: URL)") from None
    if len(image) > MAX_UPLOAD:
        raise TooLarge(f"the image is {len(image)} bytes; uploads may be at most {MAX_UPLOAD // 2**20} MB")
    if not image.startswith(IMAGE_SIGNATURES) and not (image[:4] == b"RIFF" and image[8:12] == b"WEBP"):
        raise BadInputError("image: not a PNG, JPEG, GIF, BMP or WebP file")
    name = hashlib.sha256(image).hexdigest()[:32]
    folder = directory / "explore" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.is_file():
        partial = folder / f"{name}.{os.getpid()}.part"
        partial.write_bytes(image)
        os.replace(partial, path)
    return {"upload": name, "bytes": len(image)}


class TooLarge(BadInputError):
    """A body or an upload over the board's limit (HTTP 413)."""


def start(root: Served, state: ExploreState, client: str, body: Any) -> dict[str, Any]:
    """Start (or find in the cache) the job ``body`` asks for: ``{"run", "item" | "upload", "methods" (or
    "method"), "target", "layer", "step"}`` (``upload``: a name :func:`upload` gave; ``step``: a checkpoint's;
    default the run's last one, or the model as made when it has none)."""
    explorer = _explorer(state)
    if not isinstance(body, dict) or not isinstance(body.get("run"), str):
        raise BadInputError('send {"run", "item", "methods", "target", "layer", "step"} as JSON')
    run = body["run"]
    directory = _run_dir(root, run)
    offer = explorer.info()
    if body.get("predictions") is True:  # every item's prediction with the checkpoint, to filter the items by
        step = _step(root, run, body.get("step"))
        job = explorer.submit(client, run, directory, step, {"predictions": True})
        return _with_urls(explorer.status(job.id))
    item, name = body.get("item"), body.get("upload")
    if name is not None:
        if (
            not isinstance(name, str)
            or not KEY.fullmatch(name)
            or not (directory / "explore" / "uploads" / name).is_file()
        ):
            raise BadInputError(f"upload {name!r}: no such upload in run {run!r} (upload the image first)")
        item = None
    elif isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < offer["items"]:
        raise BadInputError(f"item {item!r}: choose 0 to {offer['items'] - 1}")
    methods = body.get("methods", [body.get("method")])
    if (
        not isinstance(methods, list)
        or not 1 <= len(methods) <= MAX_METHODS
        or len(set(map(str, methods))) < len(methods)
    ):
        raise BadInputError(f"methods {methods!r}: a list of 1 to {MAX_METHODS} different method names")
    for method in methods:
        if method not in offer["methods"]:
            raise BadInputError(f"unknown method {method!r}; known: {', '.join(offer['methods'])}")
    target, layer = body.get("target"), body.get("layer") or None
    if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 0):
        raise BadInputError(f"target {target!r}: a class index, or null for the predicted class")
    if layer is not None and not isinstance(layer, str):
        raise BadInputError(f"layer {layer!r}: a name from model.named_modules(), or null")
    step = _step(root, run, body.get("step"))
    request = {"item": item, "upload": name, "methods": methods, "target": target, "layer": layer}
    return _with_urls(explorer.status(explorer.submit(client, run, directory, step, request).id))


def _step(root: Served, run: str, step: Any) -> int | None:
    """The checkpoint step asked for: one of the run's (default its last), or ``None`` for a run without any."""
    with open_reader(root, run) as reader:
        steps = reader.checkpoints()
    if step is None:
        return steps[-1] if steps else None
    if step not in steps:
        raise BadInputError(f"run {run!r} has no checkpoint at step {step!r}; its steps: {steps}")
    return int(step)


def items(
    root: Served,
    state: ExploreState,
    run: str,
    step: int | None = None,
    label: int | None = None,
    predicted: int | None = None,
    misclassified: bool = False,
    confidence: tuple[float, float] = (0.0, 1.0),
    offset: int = 0,
    limit: int = 100,
) -> dict[str, Any]:
    """The data's items that match: true class ``label``, predicted class ``predicted``, misclassified only, a
    confidence (the predicted class's probability) within ``confidence``; ``{"step", "total", "matching", "items":
    [{"item", "label", "predicted", "confidence"}] (``limit`` from ``offset``), "classes"}``. Read from the
    predictions a ``{"predictions": true}`` job computed for that checkpoint (404 until then)."""
    from .jobs import job_key

    _explorer(state)
    step = _step(root, run, step)
    path = _run_dir(root, run) / "explore" / job_key(run, step, {"predictions": True}) / "predictions.json"
    if not path.is_file():
        raise NotFound(f"run {run!r} has no predictions at step {step!r} yet: start a job with predictions: true")
    found = json.loads(path.read_text())
    low, high = confidence
    rows = [
        {"item": i, "label": true, "predicted": guess, "confidence": p}
        for i, (true, guess, p) in enumerate(zip(found["labels"], found["predicted"], found["confidence"]))
    ]
    chosen = [
        row
        for row in rows
        if (label is None or row["label"] == label)
        and (predicted is None or row["predicted"] == predicted)
        and (not misclassified or (row["label"] is not None and row["label"] != row["predicted"]))
        and low <= row["confidence"] <= high
    ]
    classes = sorted({c for c in found["labels"] + found["predicted"] if c is not None})
    return {
        "step": step,
        "total": len(rows),
        "matching": len(chosen),
        "items": chosen[offset : offset + limit],
        "classes": classes,
    }


def status(state: ExploreState, job: str) -> dict[str, Any]:
    return _with_urls(_explorer(state).status(job))


def result_file(root: Served, run: str, key: str, name: str) -> Path:
    """A result's picture, from the run's ``explore/<key>/`` only."""
    if not KEY.fullmatch(key) or not FILE.fullmatch(name):
        raise NotFound(f"no result {key!r}/{name!r}")
    path = _run_dir(root, run) / "explore" / key / name
    if not path.is_file():
        raise NotFound(f"no result {key!r}/{name!r}")
    return path


def _with_urls(answer: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import urlencode

    def url(name: str) -> str:
        return "api/explore/file?" + urlencode({"run": answer["run"], "key": answer["key"], "name": name})

    result = answer["result"]
    if result is not None and "files" in result:  # an explanation's (a predictions job has no pictures)
        answer["urls"] = {name.removesuffix(".png"): url(name) for name in FILES}
        answer["urls"]["explanations"] = [
            {kind: url(name) for kind, name in each["files"].items()} for each in result.get("explanations", [])
        ]
    return answer
