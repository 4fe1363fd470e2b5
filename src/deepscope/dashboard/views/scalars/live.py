"""Live push: ``GET /api/events?runs=...`` streams a server-sent event each time one of the runs changes (a writer
flushed new points, or let go of the run), so an open page fetches that run's new points at once instead of
polling every run every 2 s.

A run's token here is the store's live stamp (:meth:`deepscope.store.Reader.live_stamp`): it changes with every
commit, whether a writer holds the run or not (the store's :meth:`~deepscope.store.Reader.stamp`, which the caches key
on, is ``None`` while it is written: it says when a read may be kept, the live stamp only that something changed). A
directory's runs are looked at (a stat or two each) on a fast tick, a database's (one query for all) on a slower one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ...sources import Directory, Source, run_dir

# How often the runs are looked at (a stat or two per run), and how often a database source is asked.
TICK_S = 0.1
DATABASE_TICK_S = 1.0
# A comment line now and then keeps proxies from closing a quiet stream; a stream ends after a while (the browser's
# EventSource opens it again at once), so a server that stops is never held open by a page.
KEEPALIVE_S = 15.0
LIFETIME_S = 300.0


def tokens(served: Source, runs: Sequence[str]) -> list[Any]:
    """Each run's live token (:meth:`Source.live_stamps`, the store's notion of a change: a directory run's files, a
    database run's committed batches); a run that is not there (any more) has ``None``."""
    return served.live_stamps(runs)


def check(served: Source, runs: Sequence[str]) -> None:
    """:class:`~deepscope.dashboard.common.NotFound` for a run name that names no run (or leads outside the served
    directory), before any event is streamed."""
    if isinstance(served, Directory):
        for run in runs:
            run_dir(served.root, run)


def event(name: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def stream(
    served: Source, runs: Sequence[str], disconnected: Any, tick: float | None = None
) -> AsyncIterator[str]:
    """The events about ``runs``: ``ready`` once their tokens are taken (a page fetches then what it may have missed
    meanwhile), then ``points`` with the names of the runs that changed since the last tick.
    ``disconnected``: an awaitable function saying whether the page went away."""
    tick = tick or (TICK_S if isinstance(served, Directory) else DATABASE_TICK_S)
    last = await asyncio.to_thread(tokens, served, runs)
    yield "retry: 1000\n\n" + event("ready", {"runs": list(runs)})
    started = quiet = time.monotonic()
    while time.monotonic() - started < LIFETIME_S:
        await asyncio.sleep(tick)
        if await disconnected():
            return
        now = await asyncio.to_thread(tokens, served, runs)
        changed = [run for run, before, after in zip(runs, last, now) if before != after]
        last = now
        if changed:
            quiet = time.monotonic()
            yield event("points", {"runs": changed})
        elif time.monotonic() - quiet > KEEPALIVE_S:
            quiet = time.monotonic()
            yield ": keep-alive\n\n"
