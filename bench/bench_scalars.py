"""Scalar logging and reading: ``ds.Run`` and ``deepscope.store.Reader`` against TensorBoard, in one process.

Logging: ``--points`` scalars (default 100,000) through ``run.log`` and through
``torch.utils.tensorboard.SummaryWriter.add_scalar``, as ``--tags`` tags logged together at each step (one
``run.log`` call per step; one ``add_scalar`` per value, TensorBoard's only way). Each timing covers creating the
writer, logging and closing it (everything on disk), as CPU time of the whole process (``time.process_time``,
which counts both libraries' background threads) and wall time; the best of ``--repeats`` counts.

Reading: every point of every tag back into memory, by ``Reader(path).scalars(tag)`` and by TensorBoard's
``EventAccumulator`` with ``size_guidance={"scalars": 0}`` (keep all points; its default keeps a sample of
10,000), both from opening the run to holding the values.

Downsampling (no TensorBoard peer; its reader only samples at load time): one tag of 1,000,000 points read and
reduced to at most 2,000 points by ``Reader.scalars(tag, max_points=2000)``, and a zoom into 1 % of its steps.

    python bench/bench_scalars.py
    python bench/bench_scalars.py --tags 1 10 --repeats 3

``main(argv)`` returns the figures as a dict, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _best(fn: Callable[[int], object], repeats: int) -> tuple[float, float]:
    """Best CPU time and best wall time of ``fn(round)`` over ``repeats`` rounds."""
    cpu, wall = float("inf"), float("inf")
    for round_ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(round_)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return cpu, wall


def _logging(root: Path, points: int, tags: int, repeats: int) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    import deepscope as ds

    names = [f"train/metric{k}" for k in range(tags)]
    steps = points // tags
    values = np.random.default_rng(0).normal(size=(steps, tags)).tolist()

    def deepscope_run(round_: int) -> None:
        with ds.Run(root / f"ds-{tags}-{round_}") as run:
            for step, row in enumerate(values):
                run.log(dict(zip(names, row)), step=step)

    def tensorboard(round_: int) -> None:
        writer = SummaryWriter(str(root / f"tb-{tags}-{round_}"))
        for step, row in enumerate(values):
            for name, value in zip(names, row):
                writer.add_scalar(name, value, step)
        writer.close()

    ours_cpu, ours_wall = _best(deepscope_run, repeats)
    theirs_cpu, theirs_wall = _best(tensorboard, repeats)
    return {
        "points": steps * tags,
        "tags": tags,
        "deepscope_cpu_s": ours_cpu,
        "deepscope_wall_s": ours_wall,
        "tensorboard_cpu_s": theirs_cpu,
        "tensorboard_wall_s": theirs_wall,
        "cpu_ratio": theirs_cpu / ours_cpu,
        "wall_ratio": theirs_wall / ours_wall,
    }


def _reading(root: Path, tags: int, repeats: int) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepscope.store import Reader

    counts: dict[str, int] = {}

    def deepscope_read(_round: int) -> None:
        with Reader(root / f"ds-{tags}-0") as reader:
            counts["deepscope"] = sum(len(reader.scalars(tag)) for tag in reader.tags("scalar"))

    def tensorboard_read(_round: int) -> None:
        events = EventAccumulator(str(root / f"tb-{tags}-0"), size_guidance={"scalars": 0})
        events.Reload()
        counts["tensorboard"] = sum(len(events.Scalars(tag)) for tag in events.Tags()["scalars"])

    ours_cpu, ours_wall = _best(deepscope_read, repeats)
    theirs_cpu, theirs_wall = _best(tensorboard_read, repeats)
    if counts["deepscope"] != counts["tensorboard"]:
        raise AssertionError(f"read different numbers of points: {counts}")
    return {
        "points": counts["deepscope"],
        "deepscope_wall_s": ours_wall,
        "tensorboard_wall_s": theirs_wall,
        "deepscope_cpu_s": ours_cpu,
        "tensorboard_cpu_s": theirs_cpu,
        "wall_ratio": theirs_wall / ours_wall,
    }


def _downsampling(root: Path, repeats: int) -> dict[str, Any]:
    import deepscope as ds
    from deepscope.store import Reader

    n = 1_000_000
    values = np.cumsum(np.random.default_rng(1).normal(size=n))
    path = root / "million"
    with ds.Run(path) as run:
        run.log_series("signal", np.arange(n), values)
    with Reader(path) as reader:
        sizes = {}

        def full(_round: int) -> None:
            sizes["full"] = len(reader.scalars("signal"))

        def coarse(_round: int) -> None:
            sizes["coarse"] = len(reader.scalars("signal", max_points=2000))

        def zoom(_round: int) -> None:
            sizes["zoom"] = len(reader.scalars("signal", start=500_000, end=510_000, max_points=2000))

        figures = {name: _best(fn, repeats)[1] for name, fn in (("full", full), ("coarse", coarse), ("zoom", zoom))}
    return {
        "points": n,
        "read_all_s": figures["full"],
        "downsample_to_2000_s": figures["coarse"],
        "points_kept": sizes["coarse"],
        "zoom_1pct_s": figures["zoom"],
        "zoom_points_kept": sizes["zoom"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a report and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="scalars logged per run (default 100,000)")
    parser.add_argument("--tags", type=int, nargs="+", default=[1, 10], help="tags per step, one run each (1 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best counts (default 3)")
    args = parser.parse_args(argv)

    import platform

    import tensorboard
    import torch

    import deepscope

    root = Path(tempfile.mkdtemp(prefix="bench-scalars-"))
    figures: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "versions": (
            f"deepscope {deepscope.__version__}, torch {torch.__version__}, tensorboard {tensorboard.__version__}"
        ),
        "logging": [],
        "reading": [],
    }
    print(figures["machine"] + "; " + figures["versions"])
    try:
        for tags in args.tags:
            log = _logging(root, args.points, tags, args.repeats)
            read = _reading(root, tags, args.repeats)
            figures["logging"].append(log)
            figures["reading"].append(read)
            print(
                f"\nlog {log['points']:,} scalars, {tags} tag(s) per step (create + log + close, best of "
                f"{args.repeats}):\n"
                f"  deepscope Run                 cpu {log['deepscope_cpu_s']:7.3f} s   wall "
                f"{log['deepscope_wall_s']:7.3f} s\n"
                f"  TensorBoard SummaryWriter     cpu {log['tensorboard_cpu_s']:7.3f} s   wall "
                f"{log['tensorboard_wall_s']:7.3f} s\n"
                f"  TensorBoard / deepscope: cpu {log['cpu_ratio']:.1f}x (goal >= 10x), wall {log['wall_ratio']:.1f}x"
            )
            print(
                f"read back {read['points']:,} points:\n"
                f"  deepscope Reader              cpu {read['deepscope_cpu_s']:7.3f} s   wall "
                f"{read['deepscope_wall_s']:7.3f} s\n"
                f"  TensorBoard EventAccumulator  cpu {read['tensorboard_cpu_s']:7.3f} s   wall "
                f"{read['tensorboard_wall_s']:7.3f} s\n"
                f"  TensorBoard / deepscope: {read['wall_ratio']:.1f}x (goal >= 10x)"
            )
        down = _downsampling(root, args.repeats)
        figures["downsampling"] = down
        print(
            f"\n1,000,000 points of one tag: read all {down['read_all_s']:.3f} s; downsampled to "
            f"{down['points_kept']} points {down['downsample_to_2000_s']:.3f} s; zoom into 1 % of the steps "
            f"({down['zoom_points_kept']} points) {down['zoom_1pct_s']:.3f} s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
