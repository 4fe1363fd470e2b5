"""Make docs/images/vit_gradcam.png (Grad-CAM, Grad-CAM++) and vit_rollout.png (attention rollout) of a small ViT.

A torchvision ``VisionTransformer`` (4x4 patches on 28x28 images: a 7x7 grid and a class token; 2 blocks, width 64)
trained for three epochs on 10,000 FashionMNIST images, about a minute on one CPU core. The CAM methods run with
their defaults: the layer is found (the last block's first norm) and its tokens are laid on their grid without
``reshape``. A ViT with random weights would give noise, so the figure is of a trained one, however small.

Run: .venv/bin/python docs/make_vit_figures.py [gradcam] [rollout] (needs FashionMNIST: `make demo` or the Debian
package dataset-fashion-mnist).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import deepscope as ds
from deepscope.demo.cpu import cpu_threads
from deepscope.demo.data import CLASSES, load_fashion_mnist, to_inputs
from deepscope.demo.fashion import train
from deepscope.render import explanation_grid

HERE = Path(__file__).parent / "images"


def small_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=28, patch_size=4, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    model.conv_proj = nn.Conv2d(1, 64, kernel_size=4, stride=4)  # grey images: one input channel
    return model


def main(figures: list[str] | None = None) -> None:
    """Write the figures named, ``"gradcam"`` (vit_gradcam.png) and ``"rollout"`` (vit_rollout.png); default both."""
    figures = figures or ["gradcam", "rollout"]
    data = load_fashion_mnist(offline=True, install=False)
    generator = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(data.train_images), generator=generator)[:10_000]
    torch.manual_seed(0)
    model = small_vit()
    start = time.perf_counter()
    with cpu_threads(1, log=lambda message: None):
        train(model, data.train_images[subset], data.train_labels[subset], epochs=3, lr=0.003, generator=generator)
    inputs, labels = to_inputs(data.test_images[:2000]), data.test_labels[:2000]
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(dim=1) == labels).float().mean())
    print(f"trained in {time.perf_counter() - start:.0f} s; test accuracy {accuracy:.2f}")
    x = inputs[:6]
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    explanations = [ds.explain(model, x, method=m) for m in ["gradcam", "gradcam++", "saliency"]]
    print(f"default layer: {explanations[0].layer}")
    titles = [f"{CLASSES[int(t)]} -> {CLASSES[int(p)]}" for t, p in zip(labels[:6], predicted, strict=True)]
    HERE.mkdir(parents=True, exist_ok=True)
    if "gradcam" in figures:
        figure = explanation_grid(explanations, titles=titles)
        figure.savefig(HERE / "vit_gradcam.png", dpi=60)
        print(f"wrote {HERE / 'vit_gradcam.png'}")
    if "rollout" in figures:
        rollouts = [ds.explain(model, x, method="attention_rollout", head_fusion=f) for f in ["mean", "max"]]
        figure = explanation_grid([*rollouts, explanations[0]], titles=titles)
        figure.savefig(HERE / "vit_rollout.png", dpi=60)
        print(f"wrote {HERE / 'vit_rollout.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
