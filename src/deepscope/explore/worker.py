"""The explorer's worker process: makes the model and the data once, then explains items on request.

Started as ``python -m deepscope.explore.worker SPEC`` (SPEC: JSON ``{"model": ..., "data": ...}``, each either
``"package.module:factory"``, called with no arguments, or ``{"file": path}``, an object saved with ``torch.save``
by :func:`save_object`). It reads one JSON request per line on stdin and writes one JSON answer per line on
stdout: first ``{"hello": {"methods", "items", "labels", "classes"}}``, then for each request ``{"id", "ok": true,
"result"}`` or ``{"id", "ok": false, "error"}``.

A request ``{"id", "run_dir", "key", "item" | "upload", "methods", "target", "layer", "step"}`` explains item
``item`` of the data (or the image uploaded to ``<run_dir>/explore/uploads/<upload>``) with each method, with the
model's weights from the run's checkpoint at ``step`` (``None``: the model as the factory makes it, for a run
without checkpoints), and writes ``input.png``, one ``heatmap*.png`` and ``overlay*.png`` per method and
``result.json`` into ``<run_dir>/explore/<key>/`` (the cache the server reads before
asking again): never outside the run's folder.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import BadInputError, DeepscopeError

TOP = 5  # predictions listed with each result
MAX_PIXELS = 40_000_000  # an upload's pixels (PIL decodes it; its file is at most a few MB)
BATCH = 256  # items per forward pass when predicting them all
UPLOAD = re.compile(r"[0-9a-f]{32}")  # an upload's name, made by the board: its bytes' hash


def load_object(spec: str | dict[str, str], what: str) -> Any:
    """The object a spec names: ``"package.module:name"`` (a factory, called; or any other object, as it is), or
    ``{"file": path}`` saved by :func:`save_object`."""
    if isinstance(spec, dict):
        return torch.load(spec["file"], weights_only=False)
    module_name, _, name = str(spec).partition(":")
    if not module_name or not name:
        raise BadInputError(f"--{what} {spec!r}: write package.module:factory, e.g. mypackage.models:make_model")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise BadInputError(f"--{what} {spec!r}: {error}") from None
    return found() if callable(found) and not isinstance(found, nn.Module) else found


def save_object(value: Any, path: str | os.PathLike[str]) -> dict[str, str]:
    """Save a model or data set for the worker (``ds.board(model=..., data=...)``); returns its spec."""
    torch.save(value, path)
    return {"file": os.fspath(path)}


class Data:
    """Items of a data set: a ``(inputs, labels)`` pair of tensors, a tensor of inputs, or a map-style data set
    whose items are ``(input, label)`` pairs or inputs."""

    def __init__(self, data: Any) -> None:
        self.data = data
        if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            self.inputs: torch.Tensor | None = data[0]
            self.labels: list[int] | None = [int(v) for v in torch.as_tensor(data[1]).reshape(-1).tolist()]
        elif isinstance(data, torch.Tensor):
            self.inputs, self.labels = data, None
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.inputs, self.labels = None, None
        else:
            raise BadInputError(
                f"data: a (inputs, labels) pair of tensors, a tensor or a map-style data set, not {type(data).__name__}"
            )

    def __len__(self) -> int:
        return len(self.inputs) if self.inputs is not None else len(self.data)

    def item(self, index: int) -> tuple[torch.Tensor, int | None]:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise BadInputError(f"item {index!r}: choose 0 to {len(self) - 1}")
        if self.inputs is not None:
            return self.inputs[index], None if self.labels is None else self.labels[index]
        found = self.data[index]
        if isinstance(found, tuple | list) and len(found) >= 2:
            return torch.as_tensor(found[0]), int(found[1])
        return torch.as_tensor(found), None

    def label_list(self) -> list[int | None]:
        if self.labels is not None:
            return list(self.labels)
        if self.inputs is not None:
            return [None] * len(self)
        return [self.item(i)[1] for i in range(len(self))]


class Worker:
    """The model and the data, and what explaining one item takes."""

    def __init__(self, model: nn.Module, data: Any, classes: list[str] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise BadInputError(f"model: a torch.nn.Module (or a factory of one), not {type(model).__name__}")
        self.model = model.eval()
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.data = Data(data)
        self.classes = classes
        self._loaded: tuple[str, int | None] | None = None

    def hello(self) -> dict[str, Any]:
        from ..explain import methods

        return {"methods": methods(), "items": len(self.data), "labels": self.data.label_list(), "classes": None}

    def weights(self, run_dir: str, step: int | None) -> None:
        """The run's checkpoint at ``step`` loaded into the model (``None``: the factory's weights)."""
        if self._loaded == (run_dir, step):
            return
        if step is None:
            self.model.load_state_dict(self.initial)
        else:
            from ..store.reader import Reader

            with Reader(run_dir) as reader:
                self.model.load_state_dict(reader.checkpoint(step))
        self.model.eval()
        self._loaded = (run_dir, step)

    def input(self, run_dir: Path, request: dict[str, Any]) -> tuple[torch.Tensor, int | None]:
        """The input a request names: item ``item`` of the data, or the image ``upload`` kept in the run's
        ``explore/uploads/`` (decoded here, never by the web server), as the data's items are shaped: their channels
        (grey or RGB) and their height and width, values in [0, 1]; an upload has no label."""
        upload = request.get("upload")
        if upload is None:
            return self.data.item(request["item"])
        if not isinstance(upload, str) or not UPLOAD.fullmatch(upload):
            raise BadInputError(f"upload {upload!r}: the name the board gave it")
        like = self.data.item(0)[0]
        if like.ndim != 3 or like.shape[0] not in (1, 3):
            raise BadInputError(
                f"uploads need image items (channels, height, width) with 1 or 3 channels; the data's are "
                f"{tuple(like.shape)}"
            )
        channels, height, width = like.shape
        try:
            with Image.open(run_dir / "explore" / "uploads" / upload) as image:
                if image.width * image.height > MAX_PIXELS:  # a few MB of PNG can hold a huge, blank picture
                    raise BadInputError(
                        f"the upload is {image.width} x {image.height} pixels; at most {MAX_PIXELS:,} are decoded"
                    )
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (OSError, Image.DecompressionBombError) as error:
            raise BadInputError(f"the upload is not an image PIL can read ({error})") from None
        x = torch.from_numpy(pixels.copy())
        x = x[None] if channels == 1 else x.permute(2, 0, 1)
        return x.to(like.dtype).contiguous(), None

    def explain(self, request: dict[str, Any]) -> dict[str, Any]:
        """Explain one input with each of ``request["methods"]`` (or ``request["method"]``): the first method's
        pictures are ``heatmap.png`` and ``overlay.png``, the others' ``heatmap-1.png``, ``overlay-1.png``, ...;
        ``layer`` goes to the one method, or among several to those that need one (the CAMs: the others then explain
        the input, not that layer)."""
        from .. import render
        from ..explain import explain
        from ..explain.base import method_class

        run_dir, key = Path(request["run_dir"]), str(request["key"])
        if not key.isalnum():
            raise BadInputError(f"key {key!r}: letters and digits only")
        self.weights(str(run_dir), request.get("step"))
        x, label = self.input(run_dir, request)
        batch = x[None].to(next(iter(self.model.parameters())).device)
        names = request.get("methods") or [request["method"]]
        layer = request.get("layer")
        explained = []
        for name in names:
            cls = method_class(name)
            needs = cls.uses_layer and not cls.layer_optional
            explained.append(
                explain(self.model, batch, name, request.get("target"), layer if needs or len(names) == 1 else None)
            )
        with torch.no_grad():
            scores = self.model(batch)
        probabilities = scores.float().softmax(1)[0].cpu() if scores.ndim == 2 else None
        top = []
        if probabilities is not None:
            values, indices = probabilities.topk(min(TOP, len(probabilities)))
            top = [{"class": int(i), "probability": float(v)} for v, i in zip(values, indices)]
        folder = run_dir / "explore" / key
        folder.mkdir(parents=True, exist_ok=True)
        pictures = {"input": _uint8(render.to_image_array(explained[0].inputs[0]))}
        each = []
        for index, e in enumerate(explained):
            end = "" if index == 0 else f"-{index}"
            pictures[f"heatmap{end}"] = _uint8(render.colorize(e.heatmap[0]))
            pictures[f"overlay{end}"] = np.asarray(render.overlay(e.inputs[0], e.heatmap[0]))
            each.append(
                {
                    "method": e.method,
                    "layer": e.layer,
                    "target": e.labels[0] if e.labels else None,
                    "score": float(e.scores[0]),
                    "files": {"heatmap": f"heatmap{end}.png", "overlay": f"overlay{end}.png"},
                }
            )
        for name, picture in pictures.items():
            Image.fromarray(picture).save(folder / f"{name}.png")
        result = {
            "item": request.get("item"),
            "upload": request.get("upload"),
            "label": label,
            **{name: each[0][name] for name in ("method", "layer", "target", "score")},
            "explanations": each,
            "step": request.get("step"),
            "top": top,
            "files": sorted(f"{name}.png" for name in pictures),
        }
        (folder / "result.json.tmp").write_text(json.dumps(result))
        os.replace(folder / "result.json.tmp", folder / "result.json")  # the cache's mark: written last, at once
        return result

    def predictions(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every item's predicted class and confidence (its softmax probability) with the checkpoint at ``step``,
        written to ``<run_dir>/explore/<key>/predictions.json`` (what the board filters the items by)."""
        run_dir, key = Path(request["run_dir"]), str(request["key"])
        if not key.isalnum():
            raise BadInputError(f"key {key!r}: letters and digits only")
        self.weights(str(run_dir), request.get("step"))
        device = next(iter(self.model.parameters())).device
        predicted: list[int] = []
        confidence: list[float] = []
        with torch.no_grad():
            for start in range(0, len(self.data), BATCH):
                indices = range(start, min(start + BATCH, len(self.data)))
                if self.data.inputs is not None:
                    batch = self.data.inputs[start : indices.stop]
                else:
                    batch = torch.stack([self.data.item(i)[0] for i in indices])
                scores = self.model(batch.to(device))
                if scores.ndim != 2:
                    raise BadInputError(
                        f"predictions need class scores (batch, classes); the model gives {tuple(scores.shape)}"
                    )
                values, classes = scores.float().softmax(1).max(1)
                predicted += [int(c) for c in classes.tolist()]
                confidence += [float(v) for v in values.tolist()]
        result = {
            "step": request.get("step"),
            "labels": self.data.label_list(),
            "predicted": predicted,
            "confidence": confidence,
        }
        folder = run_dir / "explore" / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "predictions.json.tmp").write_text(json.dumps(result))
        os.replace(folder / "predictions.json.tmp", folder / "predictions.json")
        return {"step": request.get("step"), "items": len(predicted)}


def _uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def serve(worker: Worker, lines: Any, write: Callable[[str], None]) -> None:
    """Answer each request line with one answer line."""
    write(json.dumps({"hello": worker.hello()}))
    for line in lines:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            work = worker.predictions if request.get("predictions") else worker.explain
            answer = {"id": request["id"], "ok": True, "result": work(request)}
        except (DeepscopeError, RuntimeError, ValueError, TypeError, KeyError, IndexError, OSError) as error:
            answer = {"id": request.get("id"), "ok": False, "error": f"{type(error).__name__}: {error}"}
        write(json.dumps(answer))


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    torch.set_num_threads(int(spec.get("threads", 1)))
    out = sys.stdout

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    sys.stdout = sys.stderr  # what the user's code prints must not mix with the answers
    try:
        worker = Worker(load_object(spec["model"], "model"), load_object(spec["data"], "data"))
    except DeepscopeError as error:
        write(json.dumps({"error": str(error)}))
        raise SystemExit(1) from None
    serve(worker, sys.stdin, write)


if __name__ == "__main__":
    main()
