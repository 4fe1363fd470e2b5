"""Make the pictures in docs/maximize.md: activation maximisation and deep dream on a FashionMNIST CNN.

Trains the demo's :class:`FashionCNN` for one epoch on 20,000 FashionMNIST images (offline: torchvision's cache or
the Debian package ``fashion-mnist``), then draws what its classes and channels respond to. About a minute on two
CPU cores. Run: .venv/bin/python docs/make_maximize_figures.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from deepscope.demo.data import CLASSES, FashionData, load_fashion_mnist, to_inputs
from deepscope.demo.fashion import train
from deepscope.demo.models import FashionCNN
from deepscope.features import channels, dream, logit, maximize
from deepscope.features.transforms import jitter, pad, rotate, scale
from deepscope.render import new_figure

HERE = Path(__file__).parent / "images"
MEAN, STD = 0.2860, 0.3530  # FashionMNIST's, as the demo normalises


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] as the network's input."""
    return (images - MEAN) / STD


# Lucid's stack in proportion to a 28-pixel image (its standard one is made for 128 to 224 pixels).
SMALL_TRANSFORMS = [pad(2), jitter(2), scale([0.95, 1.0, 1.05]), rotate([-5, 0, 5]), jitter(1)]

RECIPES = {
    "simonyan": {"preset": "simonyan"},
    "yosinski": {"preset": "yosinski"},
    "lucid": {"preset": "lucid", "transforms": SMALL_TRANSFORMS},
}


def trained_model(data: FashionData) -> FashionCNN:
    torch.manual_seed(0)
    model = FashionCNN()
    count = 20_000
    train(model, data.train_images[:count], data.train_labels[:count], epochs=1, progress=False)
    with torch.no_grad():
        accuracy = (model(to_inputs(data.test_images[:2000])).argmax(1) == data.test_labels[:2000]).float().mean()
    print(f"trained on {count} images: test accuracy {accuracy:.3f}")
    return model


def class_figure(model: FashionCNN) -> None:
    rows = {}
    for name, options in RECIPES.items():
        start = time.time()
        result = maximize(
            model, logit(range(10)), steps=128, size=28, channels=1, preprocess=preprocess, progress=False, **options
        )
        rows[name] = result
        distance = float((result.images - MEAN).abs().mean())
        clamped = float(((result.images == 0) | (result.images == 1)).float().mean())
        print(
            f"{name}: {time.time() - start:.1f} s, mean logit {result.scores.mean():.1f}, mean |image - data mean| "
            f"{distance:.3f}, {clamped:.0%} of pixels at 0 or 1"
        )
    for decay in (0.0, 0.03, 0.1, 0.3):  # the L2 decay's effect, for docs/maximize.md
        result = maximize(
            model, logit(range(10)), steps=128, size=28, preprocess=preprocess, progress=False, preset="simonyan",
            decay=decay,
        )  # fmt: skip
        distance = float((result.images - MEAN).abs().mean())
        clamped = float(((result.images == 0) | (result.images == 1)).float().mean())
        print(f"simonyan, decay {decay}: mean logit {result.scores.mean():.1f}, |image - mean| {distance:.3f}, "
              f"{clamped:.0%} clamped")  # fmt: skip
    figure = new_figure(12, 4.2)
    axes = figure.subplots(len(rows), 10)
    for r, (name, result) in enumerate(rows.items()):
        for c in range(10):
            ax = axes[r, c]
            ax.imshow(result.images[c, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{CLASSES[c]}\n{float(result.scores[c]):.1f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    figure.savefig(HERE / "maximize_classes.png", dpi=90)


def channel_figure(model: FashionCNN) -> None:
    start = time.time()
    result = maximize(
        model,
        channels("features.relu2"),
        steps=128,
        size=28,
        channels=1,
        preprocess=preprocess,
        transforms=SMALL_TRANSFORMS,
        progress=False,
    )
    print(f"32 channels of features.relu2 in one batch: {time.time() - start:.1f} s")
    result.figure(columns=8).savefig(HERE / "maximize_channels.png", dpi=90)


def dream_figure(model: FashionCNN, data: FashionData) -> None:
    picks = [0, 1, 2, 3]
    images = data.test_images[picks].float().div(255).unsqueeze(1)
    big = torch.nn.functional.interpolate(images, size=56, mode="bilinear", align_corners=False)
    dreamt = dream(model, big, "features.relu3", steps=10, octaves=3, lr=0.02, preprocess=preprocess, progress=False)
    figure = new_figure(8, 4.2)
    axes = figure.subplots(2, len(picks))
    for i in range(len(picks)):
        for row, batch, title in ((0, big, CLASSES[int(data.test_labels[picks[i]])]), (1, dreamt, "dreamt")):
            axes[row, i].imshow(np.asarray(batch[i, 0]), cmap="gray", vmin=0, vmax=1)
            axes[row, i].set_title(title, fontsize=9)
            axes[row, i].set_axis_off()
    figure.savefig(HERE / "dream.png", dpi=90)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    data = load_fashion_mnist(offline=True, log=print)
    model = trained_model(data)
    class_figure(model)
    channel_figure(model)
    dream_figure(model, data)


if __name__ == "__main__":
    main()
