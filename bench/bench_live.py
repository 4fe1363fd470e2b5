"""Live points on the board's Scalars view: how long from a writer's flush to the point drawn in an open page.

A board (uvicorn in a thread) serves ``--runs`` finished runs and one run still written (``live``, one tag); headless
Chromium (Debian's ``/usr/bin/chromium`` through Playwright) shows its Scalars view. Then ``--points`` times: the
writer logs one point and flushes, and the clock runs from the flush's return until the page's ``live`` trace holds
that point, drawn (two animation frames later), checked on every animation frame. The waits between points are
spread over 0.2-0.9 s so they fall anywhere in the page's and the server's cycles. Printed: median and worst
latency with the live push (server-sent events on ``/api/events``, the page's default) and with the page's fallback
(no ``EventSource``: the 2 s poll, how the page worked before), and their ratio. Goal (issue 17): median < 1 s with
the push. TensorBoard's page polls its server every 30 s by default (its reload setting), not timed here.

    python bench/bench_live.py
    python bench/bench_live.py --points 10 --runs 20

``main(argv)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_board_page import TAG, TWO_FRAMES, chromium, write_store

LIVE_POINTS = """(n) => { const gd = document.querySelector('.card[data-tag="train/loss"] .plot');
                          const t = gd && gd.data && gd.data.find((t) => t.meta === 'live');
                          return !!t && t.x.length >= n; }"""


def latencies(url: str, run: Any, first_step: int, points: int, push: bool, seed: int) -> list[float]:
    """Seconds from each flush to the point drawn, over ``points`` points logged from ``first_step`` on."""
    rng = np.random.default_rng(seed)
    found = []
    with chromium() as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        if not push:  # the page's fallback: no EventSource, the 2 s poll
            page.add_init_script("delete window.EventSource;")
        page.goto(url.split("?")[0] + "?view=scalars")
        page.wait_for_function(LIVE_POINTS, arg=first_step, timeout=60_000, polling="raf")
        if push:
            page.wait_for_selector('.view[data-view="scalars"][data-live="open"]', state="attached", timeout=30_000)
        for k in range(points):
            time.sleep(float(rng.uniform(0.2, 0.9)))
            run.log({TAG: float(rng.random())}, step=first_step + k)
            run.flush()
            start = time.perf_counter()
            page.wait_for_function(LIVE_POINTS, arg=first_step + k + 1, timeout=30_000, polling="raf")
            page.evaluate(TWO_FRAMES)
            found.append(time.perf_counter() - start)
        assert not errors, errors
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="finished runs beside the live one")
    parser.add_argument("--points", type=int, default=20, help="points logged live, per mode")
    args = parser.parse_args(argv)

    import deepscope as ds
    from deepscope.dashboard import board

    figures: dict[str, Any] = {"runs": args.runs, "points": args.points}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_store(root, args.runs, 1000)
        run = ds.Run(root / "live", flush_interval=3600)  # flushed by hand: the clock starts at the flush
        run.log({TAG: 1.0}, step=0)
        run.flush()
        served = board(root)
        try:
            step = 1
            for name, push in (("push", True), ("poll", False)):
                found = latencies(served.url, run, step, args.points, push, seed=step)
                step += args.points
                figures[f"{name}_median_s"] = statistics.median(found)
                figures[f"{name}_worst_s"] = max(found)
        finally:
            served.stop()
            run.close()

    print(f"live point latency (flush to drawn), {args.runs} finished runs + 1 written, {args.points} points each")
    for name, what in (("push", "server-sent events (/api/events)"), ("poll", "fallback: 2 s poll")):
        print(f"  {what:<36} median {figures[f'{name}_median_s']:6.3f} s   worst {figures[f'{name}_worst_s']:6.3f} s")
    figures["ratio"] = figures["poll_median_s"] / figures["push_median_s"]
    print(f"  median, poll / push: {figures['ratio']:.1f}x (goal: push median < 1 s)")
    return figures


if __name__ == "__main__":
    main()
