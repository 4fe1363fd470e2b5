"""The absorbed share of LRP on tests/conftest.py's FashionMNIST model: the table in docs/lrp.md.

Trains FashionCNN 8-16-32 for two epochs on 4,000 FashionMNIST images (as the test fixture does, about a minute on
one core; Debian's dataset-fashion-mnist, offline) and prints ``sum(attribution) / score`` over the first 500 test
images for each set of LRP options.
"""

from __future__ import annotations

import torch

import deepscope as ds
from deepscope.demo.cpu import cpu_threads
from deepscope.demo.data import load_fashion_mnist, to_inputs
from deepscope.demo.fashion import train
from deepscope.demo.models import FashionCNN

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
    generator = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(data.train_images), generator=generator)[:4000]
    torch.manual_seed(0)
    model = FashionCNN(widths=(8, 16, 32))
    with cpu_threads(1, log=lambda message: None):
        train(
            model,
            data.train_images[subset],
            data.train_labels[subset],
            epochs=2,
            batch_size=64,
            lr=0.02,
            generator=generator,
            progress=False,
        )
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
