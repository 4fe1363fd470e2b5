"""``deepscope board`` against ``tensorboard --logdir`` over the same scalars: ``--runs`` runs (default 100) of
``--points`` points each (default 10,000, one tag), written once into a deepscope store and once as TensorBoard
event files (``torch.utils.tensorboard.SummaryWriter``, the same values).

Each server is started as its own process (loopback only; TensorBoard with ``--load_fast=true``, its Rust data
server, as ``auto`` picks where it is installed) and a headless Chromium with a fresh profile opens its scalars page
as soon as the server answers HTTP. Timed: from starting the server to the first scalar chart holding every run's
points (TensorBoard: the ``/data/plugin/timeseries/timeSeries`` answer with all runs' series for the tag has
arrived and the card's line chart has drawn; deepscope: the plotly traces hold the points), and from opening the page
to that chart; then the resident memory (VmRSS, with child processes: TensorBoard's data server) of each server
once the view has loaded, and the ratios. TensorBoard keeps a reservoir sample of 1,000 points per run and tag;
deepscope's page asks for 128,000 points per chart shared by its runs (1,024 per run at 100 runs, at most 2,000),
downsampled keeping extremes.

    python bench/bench_tensorboard_board.py
    python bench/bench_tensorboard_board.py --runs 20 --points 10000

``main(argv)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_board_page import DRAWN, TAG, TWO_FRAMES, chromium, write_store

BIN = Path(sys.executable).parent


def write_events(logdir: Path, runs: int, points: int, seed: int = 0) -> None:
    """The values :func:`bench_board_page.write_store` logs, as TensorBoard event files ``logdir/run000``..."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    for k in range(runs):
        values = rng.random(points)
        with SummaryWriter(str(logdir / f"run{k:03d}")) as writer:
            for step, value in enumerate(values.tolist()):
                writer.add_scalar(TAG, value, step)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and all its descendants (from /proc: VmRSS)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for member in family:
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in lines if line.startswith("VmRSS:")), 0)
    return total


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"the server exited ({process.returncode})"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout_s} s"
        time.sleep(0.02)


# TensorBoard's time-series card: a <line-chart> whose series come from one POST .../timeSeries per batch of tags.
TB_DRAWN = """() => {
    const card = document.querySelector('scalar-card');
    return !!card && !!card.querySelector('line-chart canvas');
}"""


def first_chart(kind: str, command: list[str], url: str, runs: int) -> dict[str, float]:
    """Start ``command`` (a server), open its scalars page as soon as it answers, time the first chart, measure RSS."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url, process)
        answered = time.perf_counter()
        with chromium() as page:
            if kind == "deepscope":
                opened = time.perf_counter()
                page.goto(url + "?view=scalars")
                page.wait_for_function(DRAWN, arg=runs, timeout=300_000, polling="raf")
            else:
                series: set[str] = set()

                def arrived(response: Any) -> None:
                    if "/data/plugin/timeseries/timeSeries" in response.url and response.ok:
                        for item in response.json():
                            if item.get("tag") == TAG:
                                series.update(run for run, points in item.get("runToSeries", {}).items() if points)

                page.on("response", arrived)
                opened = time.perf_counter()
                page.goto(url + "#timeseries")
                deadline = time.monotonic() + 300
                while len(series) < runs:
                    assert time.monotonic() < deadline, f"TensorBoard sent {len(series)} of {runs} runs"
                    page.wait_for_timeout(20)
                page.wait_for_function(TB_DRAWN, timeout=60_000, polling="raf")
            page.evaluate(TWO_FRAMES)
            drawn = time.perf_counter()
            rss = rss_bytes(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "ready_s": answered - start,
        "page_s": drawn - opened,
        "first_chart_s": drawn - start,
        "rss_mb": rss / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {"runs": args.runs, "points": args.points}
    with tempfile.TemporaryDirectory() as tmp:
        root, logdir = Path(tmp) / "runs", Path(tmp) / "tb"
        start = time.perf_counter()
        write_store(root, args.runs, args.points)
        figures["write_deepscope_s"] = time.perf_counter() - start
        start = time.perf_counter()
        write_events(logdir, args.runs, args.points)
        figures["write_events_s"] = time.perf_counter() - start

        port = free_port()
        tensorboard = [str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
        tensorboard += ["--load_fast", "true"]
        figures["tensorboard"] = first_chart("tensorboard", tensorboard, f"http://127.0.0.1:{port}/", args.runs)
        port = free_port()
        deepscope = [str(BIN / "deepscope"), "board", str(root), "--port", str(port)]
        figures["deepscope"] = first_chart("deepscope", deepscope, f"http://127.0.0.1:{port}/", args.runs)

    tb, ds = figures["tensorboard"], figures["deepscope"]
    print(f"deepscope board vs TensorBoard: {args.runs} runs x {args.points:,} points, one tag, headless Chromium")
    written = f"deepscope store {figures['write_deepscope_s']:.1f} s, event files {figures['write_events_s']:.1f} s"
    print(f"  writing: {written}")
    print(f"  {'':<40} {'TensorBoard':>12} {'deepscope':>10}   TensorBoard / deepscope")
    for key, what, unit in (
        ("ready_s", "server start to first HTTP answer", "s"),
        ("page_s", "page opened to first chart drawn", "s"),
        ("first_chart_s", "server start to first chart drawn", "s"),
        ("rss_mb", "server RSS after the view loaded", "MB"),
    ):
        print(f"  {what:<40} {tb[key]:9.2f} {unit:<2} {ds[key]:7.2f} {unit:<2}   {tb[key] / ds[key]:6.2f}x")
    return figures


if __name__ == "__main__":
    main()
