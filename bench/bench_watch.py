"""Histograms over training: deepscope's watch against torch.utils.tensorboard's add_histogram (1 thread).

1. The histograms of every parameter of torchvision's resnet18 (11.7 M values in 62 tensors): deepscope's
   ``histogram`` per tensor, and the Watcher's way (all summaries, then one transfer), against
   ``SummaryWriter.add_histogram`` on the same tensors (its default bins, and 64 bins like ours).
   Goal (issue 3): at least 5x cheaper than add_histogram.
2. The training step of a 10.5 M-parameter MLP (SGD, batch 64) with a Watcher recording weights, biases,
   gradients and activations every 100 steps into a sink that drops them, against the same steps unwatched.
   Goal (issue 3): at most 10 % slower.

Run: .venv/bin/python bench/bench_watch.py [--repeat 5] [--steps 200] [--every 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torchvision
from common import machine, report, timed_together
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from deepscope.track.histogram import histogram, summarise
from deepscope.track.watch import Watcher


def histogram_cost(repeat: int) -> dict[str, float]:
    torch.manual_seed(0)
    params = [(name, p.detach()) for name, p in torchvision.models.resnet18().named_parameters()]
    values = sum(p.numel() for _, p in params)
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        step = iter(range(10**9))

        def ours() -> None:
            for name, p in params:
                histogram(p, 64, tag=name)

        def ours_batched() -> None:
            torch.stack([summarise(p, 64) for _, p in params]).cpu()

        def tensorboard() -> None:
            s = next(step)
            for name, p in params:
                writer.add_histogram(name, p, s)

        def tensorboard_64() -> None:
            s = next(step)
            for name, p in params:
                writer.add_histogram(name, p, s, bins=64)

        rows = timed_together(
            {
                "deepscope histogram (64 bins)": ours,
                "deepscope summaries, one transfer": ours_batched,
                "SummaryWriter.add_histogram (default bins)": tensorboard,
                "SummaryWriter.add_histogram (64 bins)": tensorboard_64,
            },
            repeat,
        )
        writer.close()
    times = report(
        f"Histograms of resnet18's {len(params)} parameters ({values / 1e6:.1f} M values)",
        rows,
        "deepscope histogram (64 bins)",
    )
    ours_s = times["deepscope histogram (64 bins)"]
    ratio = times["SummaryWriter.add_histogram (default bins)"] / ours_s
    ratio_64 = times["SummaryWriter.add_histogram (64 bins)"] / ours_s
    print(f"  add_histogram / deepscope = {ratio:.1f}x (default bins), {ratio_64:.1f}x (64 bins)   (goal >= 5)")
    return {
        "histogram_values": float(values),
        "histogram_deepscope_s": ours_s,
        "histogram_deepscope_batched_s": times["deepscope summaries, one transfer"],
        "histogram_tensorboard_s": times["SummaryWriter.add_histogram (default bins)"],
        "histogram_tensorboard_64_s": times["SummaryWriter.add_histogram (64 bins)"],
        "histogram_ratio": ratio,
        "histogram_ratio_64_bins": ratio_64,
    }


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
        nn.Linear(2048, 10),
    )  # fmt: skip


def step_slowdown(repeat: int, steps: int, every: int) -> dict[str, float]:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 1024, generator=generator), torch.randint(0, 10, (64,), generator=generator))]
    batches *= 4
    recorded: list[int] = []

    def sink(records: list) -> None:
        recorded.append(len(records))

    def train(watched: bool) -> float:
        watcher = Watcher(model, every=every, sink=sink) if watched else None
        start = time.perf_counter()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        if watcher is not None:
            watcher.remove()  # hands over the last recorded step: part of the cost
        return time.perf_counter() - start

    train(False)  # warm-up
    plain, watched = [], []
    for _ in range(repeat):
        plain.append(train(False))
        watched.append(train(True))
    # The cost of recording itself, measured apart: one recorded step minus one plain step.
    one_plain = min(plain) / steps
    with Watcher(model, every=1, sink=sink) as watcher:
        extra = []
        for i in range(repeat):
            x, y = batches[i % len(batches)]
            start = time.perf_counter()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            watcher.flush()
            extra.append(time.perf_counter() - start - one_plain)
    params = sum(p.numel() for p in model.parameters())
    best_plain, best_watched = min(plain), min(watched)
    median_slowdown = statistics.median(w / p - 1 for p, w in zip(plain, watched))
    recording = min(extra)
    print(f"\nTraining steps of a {params / 1e6:.1f} M-parameter MLP, batch 64, every={every}  [{machine()}]")
    print(f"  {steps} steps unwatched          {best_plain:8.3f} s  ({best_plain / steps * 1e3:.1f} ms a step)")
    print(f"  {steps} steps watched            {best_watched:8.3f} s  ({recorded[0]} records a recorded step)")
    print(f"  slowdown, best of {repeat}        {best_watched / best_plain - 1:8.1%}   (goal <= 10 %)")
    print(f"  slowdown, median of pairs  {median_slowdown:8.1%}")
    share = recording / (every * one_plain)
    print(f"  one recorded step costs {recording * 1e3:.1f} ms extra = {share:.1%} of {every} steps")
    return {
        "params": float(params),
        "step_plain_s": best_plain / steps,
        "step_watched_s": best_watched / steps,
        "slowdown": best_watched / best_plain - 1,
        "slowdown_median": median_slowdown,
        "recorded_step_extra_s": recording,
        "recording_share": share,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return {**histogram_cost(args.repeat), **step_slowdown(args.repeat, args.steps, args.every)}


if __name__ == "__main__":
    main()
