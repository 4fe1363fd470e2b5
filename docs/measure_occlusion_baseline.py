"""The figure of docs/occlusion.md: where occlusion's largest drop lands on FashionMNIST, for each baseline.

Trains the demo's CNN as ``deepscope demo`` does (one epoch over the 60,000 training images, seed 0), explains
100 test images (seeded choice) for their predicted class with the demo's occlusion (4 x 4 patches, stride 2,
the drop in class probability), once with patches of the data set's mean pixel and once with patches of the
background value (black), and counts the images whose largest drop lies on the object: the pixels brighter than
``THRESHOLD``.

Needs the data (``apt-get install dataset-fashion-mnist``). Run: .venv/bin/python docs/measure_occlusion_baseline.py
"""

from __future__ import annotations

import time

import torch

import deepscope as ds
from deepscope.demo.data import load_fashion_mnist, to_inputs
from deepscope.demo.fashion import OPTIONS, train
from deepscope.demo.models import FashionCNN

IMAGES = 100
THRESHOLD = 0.1  # in [0, 1] pixel units: FashionMNIST's background is 0, its garments are brighter


def on_object(model: torch.nn.Module, inputs: torch.Tensor, mask: torch.Tensor, **options: object) -> float:
    """The fraction of inputs whose occlusion map peaks on a pixel of ``mask``."""
    heatmap = ds.explain(model, inputs, method="occlusion", **options).heatmap
    peak = heatmap.flatten(1).argmax(dim=1)
    return float(mask.flatten(1).gather(1, peak[:, None]).float().mean())


def main() -> None:
    data = load_fashion_mnist(offline=True)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = FashionCNN()
    start = time.perf_counter()
    train(model, data.train_images, data.train_labels, epochs=1, generator=generator, progress=False)
    chosen = torch.randperm(len(data.test_images), generator=torch.Generator().manual_seed(1))[:IMAGES]
    images = data.test_images[chosen]
    inputs = to_inputs(images)
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == data.test_labels[chosen]).float().mean())
    print(f"trained in {time.perf_counter() - start:.0f} s; accuracy on the {IMAGES} images {accuracy:.2f}")
    mask = images.float().div(255) > THRESHOLD
    print(f"object: pixels above {THRESHOLD}, {float(mask.float().mean()):.0%} of all pixels")
    demo = dict(OPTIONS["occlusion"])
    rows = {
        "data set mean (grey)": {"baseline": "mean", "data": to_inputs(data.train_images)},
        "background (black), the demo's": {"baseline": demo["baseline"]},
    }
    for probability in (True, False):
        for name, baseline in rows.items():
            options = {**demo, **baseline, "target": ds.probability(None) if probability else None}
            share = on_object(model, inputs, mask, **options)
            measured = "probability" if probability else "logit"
            print(f"{name:<32} {measured:<12} largest drop on the object in {share:.0%} of {IMAGES} images")


if __name__ == "__main__":
    main()
