"""Logging into a PostgreSQL store: the training process's CPU against SQLite and TensorBoard's ``SummaryWriter``,
several writer processes at once, and reading back, against the same points in SQLite.

Logging: ``--points`` scalars (default 100,000), one tag, one ``run.log`` per step (one ``add_scalar`` for
TensorBoard); create + log + close, the CPU of this process only (``time.process_time``: the server's own work is
in its processes), the best of ``--repeats``. Writers: ``--writers`` processes (default 8) start together, each
logging ``--points`` scalars (10 tags per step) into a run of its own; points per second from the common start to
the last close. Reading: every point back (``Reader.scalars``), and downsampled to 2,000 points.

Against ``--url`` (``postgresql://...``), or a throwaway server started here (tests/pg_cluster.py: needs Debian's
postgresql package, ``make postgres``).

    python bench/bench_store_postgres.py
    python bench/bench_store_postgres.py --url postgresql://me@db/deepscope --writers 16

``main(argv)`` returns the figures as a dict, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_WRITER = r"""
import sys, time
import numpy as np, psycopg, deepscope.track.run
import deepscope as ds
url, name, points, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rows = np.random.default_rng(0).normal(size=(points // 10, 10)).tolist()
names = [f"train/metric{k}" for k in range(10)]
while time.time() < start:
    time.sleep(0.001)
cpu = time.process_time()
with ds.Run(url, name=name) as run:
    for step, row in enumerate(rows):
        run.log(dict(zip(names, row)), step=step)
print(time.time() - start, time.process_time() - cpu)
"""


def _best(fn: Callable[[int], object], repeats: int) -> tuple[float, float]:
    cpu, wall = float("inf"), float("inf")
    for round_ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(round_)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return cpu, wall


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str | None]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    import pg_cluster

    why = pg_cluster.missing()
    if why is not None:
        print(f"skipped: {why}")
        yield None
        return
    with pg_cluster.cluster() as started:
        yield started


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a report and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database (default: a throwaway server started here)")
    parser.add_argument("--points", type=int, default=100_000, help="scalars per run (default 100,000)")
    parser.add_argument("--writers", type=int, default=8, help="writer processes at once (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best counts (default 3)")
    args = parser.parse_args(argv)

    import deepscope as ds
    from deepscope.store import Reader

    figures: dict[str, Any] = {}
    values = np.random.default_rng(0).normal(size=args.points).tolist()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        with _server(args.url) as url:
            if url is None:
                return figures

            def log_into(where: dict[str, Any]) -> None:
                with ds.Run(**where) as run:
                    for step, value in enumerate(values):
                        run.log({"loss": value}, step=step)

            def summary_writer(round_: int) -> None:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(root / f"tb-{round_}"))
                for step, value in enumerate(values):
                    writer.add_scalar("loss", value, step)
                writer.close()

            places = {
                "postgresql": lambda i: log_into({"path": url, "name": f"{prefix}/one-{i}"}),
                "sqlite": lambda i: log_into({"path": root / f"one-{i}"}),
                "tensorboard": summary_writer,
            }
            print(
                f"log {args.points:,} scalars, one tag (create + log + close; this process's CPU, best of "
                f"{args.repeats}):"
            )
            for place, fn in places.items():
                cpu, wall = _best(fn, args.repeats)
                figures[f"log_{place}_cpu_s"], figures[f"log_{place}_wall_s"] = cpu, wall
                print(f"  {place:<12} cpu {cpu:7.3f} s   wall {wall:7.3f} s")
            ratio = figures["log_tensorboard_cpu_s"] / figures["log_postgresql_cpu_s"]
            figures["tensorboard_over_postgresql_cpu"] = ratio
            print(f"  SummaryWriter / PostgreSQL: cpu {ratio:.1f}x (goal >= 5x)")

            start = time.time() + 20  # every writer imported and connected before the clock starts
            processes = [
                subprocess.Popen(
                    [sys.executable, "-c", _WRITER, url, f"{prefix}/w{i}", str(args.points), str(start)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(args.writers)
            ]
            outputs = [process.communicate()[0].split() for process in processes]
            wall = max(float(out[0]) for out in outputs)
            figures["writers"] = args.writers
            figures["writers_points_per_s"] = args.writers * args.points / wall
            figures["writers_cpu_per_writer_s"] = sum(float(out[1]) for out in outputs) / args.writers
            print(
                f"{args.writers} writer processes, {args.points:,} scalars each (10 tags per step): "
                f"{figures['writers_points_per_s']:,.0f} points/s sustained, "
                f"{figures['writers_cpu_per_writer_s']:.3f} s CPU per writer"
            )

            for place, reader in (
                ("postgresql", lambda: Reader(url, f"{prefix}/one-0")),
                ("sqlite", lambda: Reader(root / "one-0")),
            ):
                with reader() as opened:
                    _, full = _best(lambda _: opened.scalars("loss"), args.repeats)
                    _, coarse = _best(lambda _: opened.scalars("loss", max_points=2000), args.repeats)
                figures[f"read_{place}_s"], figures[f"downsample_{place}_s"] = full, coarse
                print(
                    f"read {args.points:,} points back from {place}: all {full:.4f} s, to 2,000 points {coarse:.4f} s"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
