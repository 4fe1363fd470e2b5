"""Make docs/images/vit_gradcam.png: Grad-CAM and Grad-CAM++ of a small vision transformer on FashionMNIST.

A torchvision ``VisionTransformer`` (4x4 patches on 28x28 images: a 7x7 grid and a class token; 2 blocks, width 64)
trained for three epochs on 10,000 FashionMNIST images, about a minute on one CPU core. The CAM methods run with
their defaults: the layer is found (the last block's first norm) and its tokens are laid on their grid without
``reshape``. A ViT with random weights would give noise, so the figure is of a trained one, however small.

Run: .venv/bin/python docs/make_vit_figures.py (needs FashionMNIST: `make demo` or the Debian package
dataset-fashion-mnist).
"""

from __future__ import annotations

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


def main() -> None:
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
    figure = explanation_grid(explanations, titles=titles)
    HERE.mkdir(parents=True, exist_ok=True)
    figure.savefig(HERE / "vit_gradcam.png", dpi=60)
    print(f"wrote {HERE / 'vit_gradcam.png'}")


if __name__ == "__main__":
    main()
