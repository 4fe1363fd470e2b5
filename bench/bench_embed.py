"""``embed`` over 10,000 images (small CNN, 28 x 28, batches of 256, 1 thread) vs the bare forward passes.

Both loop over the same DataLoader under ``torch.no_grad``; ``embed`` also hooks ``conv2``, averages its maps,
keeps labels, predictions and 28 px thumbnails. Best of ``--repeat`` interleaved rounds.

Goal (issue 6): at most 1.1x the bare forward passes.
Run: .venv/bin/python bench/bench_embed.py [--images 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse

import torch
from common import report, timed_together
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deepscope.embed import embed


def small_cnn() -> nn.Module:
    """A FashionMNIST-sized CNN: two conv-ReLU-pool blocks and a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 10),
    ).eval()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = small_cnn()
    data = TensorDataset(torch.rand(args.images, 1, 28, 28), torch.randint(0, 10, (args.images,)))
    loader = DataLoader(data, batch_size=256)

    def forward() -> None:
        with torch.no_grad():
            for x, _ in loader:
                model(x)

    def ours() -> None:
        embed(model, loader, "3", pool="avg", progress=False)

    rows = timed_together({"bare forward passes": forward, "deepscope embed (conv2, avg)": ours}, repeat=args.repeat)
    times = report(f"embed over {args.images} images of 28 x 28", rows, reference="bare forward passes")
    ratio = times["deepscope embed (conv2, avg)"] / times["bare forward passes"]
    print(f"  embed / bare forward = {ratio:.3f}x (goal <= 1.1x)")
    return times


if __name__ == "__main__":
    main()
