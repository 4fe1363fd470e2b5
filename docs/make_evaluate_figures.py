"""Make the pictures of docs/evaluate.md: trust checks on the demo's CNN trained briefly on FashionMNIST.

Needs the data (``apt-get install dataset-fashion-mnist``). Run: .venv/bin/python docs/make_evaluate_figures.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

import deepscope as ds
from deepscope.demo.data import BACKGROUND, CLASSES, load_fashion_mnist, to_inputs
from deepscope.demo.fashion import OPTIONS, train
from deepscope.demo.models import FashionCNN
from deepscope.render import save_figure

HERE = Path(__file__).parent / "images"
TRAIN = 8000


def fit(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The training function the data randomisation check calls: the demo's, two epochs."""
    train(model, images, labels, epochs=2, batch_size=64, lr=0.02, progress=False)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    data = load_fashion_mnist(offline=True)
    subset = torch.randperm(len(data.train_images), generator=torch.Generator().manual_seed(0))[:TRAIN]
    images, labels = data.train_images[subset], data.train_labels[subset]
    torch.manual_seed(1)
    model = FashionCNN()
    fit(model, images, labels)
    test_x, test_y = to_inputs(data.test_images[:2000]), data.test_labels[:2000]
    sample = test_x[:8]

    wrong = ds.evaluate.confidently_wrong(model, (test_x, test_y), k=8, method="gradcam", classes=list(CLASSES))
    save_figure(wrong.figure(columns=4), str(HERE / "confidently_wrong.png"))
    print(f"confidently wrong: {wrong.wrong} of {wrong.total}")

    check = ds.sanity_check(model, sample, methods=("saliency", "guided_backprop", "gradcam"))
    save_figure(check.figure(metrics=("spearman", "ssim", "hog")), str(HERE / "sanity_hog.png"))

    randomized = ds.evaluate.data_randomization_check(
        model, FashionCNN, fit, images, labels, sample, methods=("saliency", "guided_backprop", "gradcam")
    )
    save_figure(randomized.grid(index=0), str(HERE / "data_randomization.png"))
    for method in randomized.methods:
        means = randomized.scores[method]["spearman"].mean(dim=1).tolist()
        print(f"data randomisation, {method}: " + ", ".join(f"{s} {m:.2f}" for s, m in zip(randomized.steps, means)))

    comparison(model, sample)


def comparison(model: torch.nn.Module, sample: torch.Tensor) -> None:
    """The method comparison table as the demo draws it: occlusion with black patches and deletion to black (the
    background), so neither adds content where the data has none."""
    options = {"occlusion": OPTIONS["occlusion"], "lime": {"samples": 200, "seed": 0}, "smoothgrad": {"seed": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = ds.evaluate.compare_methods(
            model, sample, options=options, steps=28, baseline=BACKGROUND, progress=True
        )
    save_figure(table.figure(), str(HERE / "method_comparison.png"))
    print(table)


if __name__ == "__main__":
    main()
