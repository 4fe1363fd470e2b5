"""How many CPU threads the demos give torch, and a block that sets it and puts it back."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

Log = Callable[[str], None]


def choose_threads() -> int:
    """CPU threads for the demos: torch's default, less the cores other processes keep busy (1-minute load).

    On a busy machine, torch's threads wait on each other: on 2 cores with another job running, 2 threads train
    about five times slower than 1.
    """
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(torch.get_num_threads(), round(cores - busy)))


@contextmanager
def cpu_threads(count: int, log: Log) -> Iterator[None]:
    """torch uses ``count`` CPU threads inside the block, and its previous number after."""
    previous = torch.get_num_threads()
    if count != previous:
        log(f"using {count} CPU thread(s) (torch's default here: {previous}; --threads N to choose)")
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
