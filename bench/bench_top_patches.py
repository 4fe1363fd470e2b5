"""Top dataset patches of every channel of FashionCNN's ``features.relu3`` over 10,000 28 x 28 images.

deepscope's ``top_patches`` (one streaming pass, running top-k per unit, forward stopped at the layer) against the
bare forward passes of the same batches under ``torch.no_grad``: the whole model, and the model up to the layer.
Random weights and random images: the work does not depend on what the network learned.

Goal (issue 5): top patches in no more than 1.2x the time of the forward passes.
Run: .venv/bin/python bench/bench_top_patches.py [--images 10000] [--batch 64] [--k 9]
"""

from __future__ import annotations

import argparse

import torch
from common import report, timed_together

from deepscope.demo.models import FashionCNN
from deepscope.features import top_patches


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = FashionCNN().eval()
    images = torch.rand(args.images, 1, 28, 28)
    batches = images.split(args.batch)

    def forward() -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    def forward_to_layer() -> None:
        with torch.no_grad():
            for x in batches:
                model.features(x)

    def ours() -> None:
        top_patches(model, images, "features.relu3", k=args.k, batch_size=args.batch, progress=False)

    functions = {
        "forward passes (whole model, no grad)": forward,
        "forward passes up to features.relu3": forward_to_layer,
        "deepscope top_patches": ours,
    }
    rows = timed_together(functions, args.repeat)
    times = report(
        f"Top patches, FashionCNN features.relu3 (64 channels, k={args.k}), {args.images} images of 28 x 28, "
        f"batch {args.batch}",
        rows,
        "deepscope top_patches",
    )
    ratio = times["deepscope top_patches"] / times["forward passes (whole model, no grad)"]
    print(f"  deepscope top_patches / forward passes = {ratio:.2f} (goal <= 1.2)")
    return {**times, "ratio": ratio}


if __name__ == "__main__":
    main()
