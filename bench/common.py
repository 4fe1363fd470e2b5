"""Timing helpers shared by the benchmarks: same process, same thread count, best-of-k wall time."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

from deepscope.dashboard.headless import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 (the page benchmarks')


def timed_together(functions: dict[str, Callable[[], object]], repeat: int = 5) -> list[tuple[str, float]]:
    """Best wall time of each function, in seconds, over ``repeat`` rounds that run them in turn.

    Interleaving the rounds spreads drift in the machine's load over all of them alike, and the minimum is the
    figure least disturbed by other work (as ``timeit`` advises). One warm-up round comes first.
    """
    for fn in functions.values():
        fn()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return list(best.items())


def resnet18_batch(batch: int, size: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """One thread, fixed seed: resnet18 with random weights in eval mode, a random batch, its predicted classes."""
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        classes = model(x).argmax(1)
    return model, x, classes


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
