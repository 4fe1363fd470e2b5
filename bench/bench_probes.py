"""Probes during training: what explaining 16 probe images with Grad-CAM every 100 steps adds to the demo's training.

The demo's training (:func:`deepscope.demo.fashion.train`: FashionCNN, Adam, batch 128, FashionMNIST, ``train/loss``
and ``train/acc`` logged into a run every step) three ways, in turn, in the same process:

* plain: no watcher;
* watched: ``run.watch(model, every=100, kinds=())``, a watcher that records nothing (its step-counting hooks);
* probed: ``run.watch(model, every=100, kinds=(), probes=16 test images, labels=...)``: Grad-CAM of the probes at
  steps 0, 100, 200, ..., stored as explanation sets (the PNGs are written by the run's writer thread).

The cost of probing is probed / watched - 1 (goal, issue 19: under 5 %), also shown against plain; and, measured
apart, one probing (``Probes.record``) as a share of the 100 steps between two of them. The figures are the
best of ``--repeat`` rounds and the median of the rounds' ratios; on a shared machine the median is the steadier.

Run: .venv/bin/python bench/bench_probes.py [--repeat 3] [--steps 400] [--every 100] [--probes 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine

import deepscope as ds
from deepscope.demo.data import load_fashion_mnist, to_inputs
from deepscope.demo.fashion import BATCH_SIZE, train
from deepscope.demo.models import FashionCNN
from deepscope.track.probes import Probes


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_fashion_mnist(offline=True, log=lambda _: None)
    images, labels = data.train_images[: args.steps * BATCH_SIZE], data.train_labels[: args.steps * BATCH_SIZE]
    probes = to_inputs(data.test_images[: args.probes])
    probe_labels = data.test_labels[: args.probes]

    def one(way: str, folder: Path) -> float:
        torch.manual_seed(0)
        model = FashionCNN()
        generator = torch.Generator().manual_seed(0)
        with ds.Run(folder / way) as run:
            start = time.perf_counter()
            if way == "plain":
                train(model, images, labels, generator=generator, progress=False, run=run)
            else:
                extra = {"probes": probes, "labels": probe_labels} if way == "probed" else {}
                with run.watch(model, every=args.every, kinds=(), **extra):
                    train(model, images, labels, generator=generator, progress=False, run=run)
            run.flush()  # the writer's work (the PNGs) counts
            return time.perf_counter() - start

    times: dict[str, list[float]] = {"plain": [], "watched": [], "probed": []}
    with tempfile.TemporaryDirectory() as folder:
        one("watched", Path(folder) / "warm-up")
        for round_ in range(args.repeat):
            for way in times:
                times[way].append(one(way, Path(folder) / str(round_)))
    probed_steps = len(range(0, args.steps, args.every))

    # One probing alone, against one training step, on the trained-size model.
    torch.manual_seed(0)
    model = FashionCNN().train()
    chosen = Probes(probes, probe_labels, ["gradcam"], args.every)
    chosen.record(model, 0)  # warm-up (chooses the layer)
    singles = []
    for _ in range(5):
        start = time.perf_counter()
        chosen.record(model, 0)
        singles.append(time.perf_counter() - start)
    one_probe = min(singles)
    best = {way: min(values) for way, values in times.items()}
    cost = best["probed"] / best["watched"] - 1
    median = statistics.median(p / w - 1 for p, w in zip(times["probed"], times["watched"]))
    against_plain = statistics.median(p / q - 1 for p, q in zip(times["probed"], times["plain"]))
    step_s = best["watched"] / args.steps
    share = one_probe / (args.every * step_s)
    print(
        f"\nThe demo's training, {args.steps} steps of batch {BATCH_SIZE}; Grad-CAM of {args.probes} probes every "
        f"{args.every} steps ({probed_steps} probings)  [{machine()}]"
    )
    for way, values in times.items():
        print(f"  {way:<8} best {min(values):7.2f} s   rounds: {', '.join(f'{v:.2f}' for v in values)}")
    print(f"  probing cost: probed / watched - 1 = {cost:6.1%} (best), {median:6.1%} (median of rounds)  (goal < 5 %)")
    print(f"  probed / plain - 1 = {against_plain:6.1%} (median of rounds)")
    print(f"  one probing: {one_probe * 1e3:.1f} ms; one step {step_s * 1e3:.1f} ms: {share:.1%} of {args.every} steps")
    return {
        "plain_s": best["plain"],
        "watched_s": best["watched"],
        "probed_s": best["probed"],
        "probing_cost": cost,
        "probing_cost_median": median,
        "probed_over_plain_median": against_plain,
        "one_probing_s": one_probe,
        "one_probing_share": share,
    }


if __name__ == "__main__":
    main()
