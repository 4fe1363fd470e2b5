"""Make docs/images/evolution.png for docs/features.md: a small CNN's first filters at checkpoints of its training.

scikit-learn's digits (8 x 8, upsampled to 24 x 24) as data, checkpoints kept by a ``ds.Run`` in a temporary
directory, then ``ds.features.evolution`` over them. Run: .venv/bin/python docs/make_evolution_figures.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import deepscope as ds
from deepscope.features import evolution

HERE = Path(__file__).parent / "images"
CHECKPOINTS = (0, 25, 100, 400, 1200)


def net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def main() -> None:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = nn.functional.interpolate(x, size=24, mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with tempfile.TemporaryDirectory() as directory, ds.Run(Path(directory) / "digits") as run:
        for step in range(CHECKPOINTS[-1] + 1):
            if step in CHECKPOINTS:
                run.checkpoint(model, step=step)
            batch = torch.randint(0, len(x), (64,))
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        result = evolution(run, net, "0", what="filters", progress=False)
    figure = result.figure(max_filters=16)
    figure.savefig(HERE / "evolution.png", dpi=100)
    print("wrote docs/images/evolution.png")


if __name__ == "__main__":
    main()
