"""The absorbed share of LRP on tests/conftest.py's FashionMNIST model: the table in docs/lrp.md.

Trains FashionCNN 8-16-32 for two epochs on 4,000 FashionMNIST images (as the test fixture does, about a minute on
one core; Debian's dataset-fashion-mnist, offline) and prints ``sum(attribution) / score`` over the first 500 test
images for each set of LRP options.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import deepscope as ds
from deepscope.demo.data import load_fashion_mnist, to_inputs

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import fit_small_fashion_cnn

OPTIONS: list[dict[str, object]] = [
    {},
    {"biases": False},
    {"biases": False, "first_rule": None},
    {"biases": False, "first_rule": "flat"},
    {"rule": "gamma"},
    {"rule": "gamma", "biases": False},
]


def trained_model() -> tuple[torch.nn.Module, torch.Tensor]:
    data = load_fashion_mnist(offline=True, install=False, log=lambda message: None)
    model = fit_small_fashion_cnn(data)  # the test fixture's model, trained the same way
    return model.eval(), to_inputs(data.test_images[:500])


def main() -> None:
    model, inputs = trained_model()
    for options in OPTIONS:
        e = ds.explain(model, inputs, method="lrp", **options)
        ratio = 1 - e.extras["absorbed"].double()
        low, high = ratio.quantile(0.05), ratio.quantile(0.95)
        print(
            f"{options!s:45} median {ratio.median():.3f}  5%..95% {low:.3f}..{high:.3f}  "
            f"min..max {ratio.min():.3f}..{ratio.max():.3f}"
        )


if __name__ == "__main__":
    main()
