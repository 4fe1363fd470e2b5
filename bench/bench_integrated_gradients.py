"""Integrated gradients with internal batching: deepscope vs Captum, same steps and batch size, 1 thread.

Goal (issue 2): no slower than Captum. Run: .venv/bin/python bench/bench_integrated_gradients.py
"""

from __future__ import annotations

import argparse

import torch
from captum.attr import IntegratedGradients
from common import report, resnet18_batch, timed_together

import deepscope as ds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    model, x, classes = resnet18_batch(args.batch, args.size)
    captum = IntegratedGradients(model)
    results = {}

    def ours() -> None:
        results["ours"] = ds.explain(
            model, x, method="integrated_gradients", target=classes, steps=args.steps, batch_size=args.batch_size
        ).attribution

    def peer() -> None:
        results["captum"] = captum.attribute(
            x, baselines=torch.zeros_like(x), target=classes, n_steps=args.steps, internal_batch_size=args.batch_size
        )

    rows = timed_together({"deepscope integrated_gradients": ours, "captum IntegratedGradients": peer}, args.repeat)
    times = report(
        f"Integrated gradients, resnet18, batch {args.batch}, {args.size} px, {args.steps} steps, "
        f"batch_size {args.batch_size}",
        rows,
        "deepscope integrated_gradients",
    )
    difference = (results["ours"] - results["captum"]).abs().max().item()
    print(f"  max |ours - captum| = {difference:.2e}")
    ratio = times["captum IntegratedGradients"] / times["deepscope integrated_gradients"]
    print(f"  captum / deepscope = {ratio:.2f} (goal >= 1)")
    return times


if __name__ == "__main__":
    main()
