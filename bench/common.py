"""Timing helpers shared by the benchmarks: same process, same thread count, best-of-k wall time."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs, in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )


def report(title: str, rows: list[tuple[str, float]], reference: str) -> dict[str, float]:
    """Print times and each one's ratio to ``reference`` (ratio > 1: the row is faster than the reference)."""
    times = dict(rows)
    print(f"\n{title}  [{machine()}]")
    for name, seconds in rows:
        ratio = times[reference] / seconds
        print(f"  {name:<44} {seconds:8.3f} s   {reference} / this = {ratio:5.2f}x")
    return times
