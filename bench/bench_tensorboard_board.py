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
deepscope's page asks for 64,000 points per chart shared by its runs (512 per run at 100 runs, at most 2,000),
downsampled keeping extremes.

With ``--load``: many viewers at once (issue 17). While one more run is being written, each of 1, then 16
(``--clients``) viewers polls over its own keep-alive connection, in turn, the list of runs and one tag's series of
every run (deepscope: ``/api/overview`` and ``/api/scalars/batch`` as the page asks; TensorBoard: ``/data/runs`` and the
``timeSeries`` POST of its time-series dashboard), for ``--seconds``; printed: requests per second of all viewers
together and latency percentiles, per server. Goal: 16 viewers get at least the throughput of one, p99 under 1 s.

    python bench/bench_tensorboard_board.py
    python bench/bench_tensorboard_board.py --runs 20 --points 10000
    python bench/bench_tensorboard_board.py --load --clients 1,16 --seconds 20 [--workers 4]

``main(argv)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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


# ---- under load: many viewers at once ---------------------------------------------------------------------------

# A run still being written while the viewers poll: a point every few milliseconds, flushed as a training loop does.
LIVE_DEEPSCOPE = """
import sys, time, deepscope as ds
with ds.Run(sys.argv[1], flush_interval=1.0) as run:
    step = 0
    while True:
        run.log({sys.argv[2]: step * 1e-3}, step=step)
        step += 1
        time.sleep(0.005)
"""
LIVE_TENSORBOARD = """
import sys, time
from torch.utils.tensorboard import SummaryWriter
writer = SummaryWriter(sys.argv[1], flush_secs=1)
step = 0
while True:
    writer.add_scalar(sys.argv[2], step * 1e-3, step)
    step += 1
    time.sleep(0.005)
"""


def viewer_requests(kind: str, runs: int) -> list[tuple[str, str, bytes | None]]:
    """What one viewer of the scalars view asks, in turn, while it polls: the list of runs, then the tag's series
    of every run (deepscope: the runs with the views that have data, ``/api/overview``, and one
    ``/api/scalars/batch`` as the page sends them; TensorBoard: the ``timeSeries`` POST its time-series dashboard
    sends)."""
    if kind == "deepscope":
        per_run = min(2000, 128_000 // (runs + 1))
        batch = urlencode({"tag": TAG, "max_points": per_run, "encoding": "base64"})
        return [("GET", "/api/overview", None), ("GET", f"/api/scalars/batch?{batch}", None)]
    form = urlencode({"requests": json.dumps([{"plugin": "scalars", "tag": TAG}])}).encode()
    return [("GET", "/data/runs", None), ("POST", "/data/plugin/timeseries/timeSeries", form)]


def hammer(url: str, requests: list[tuple[str, str, bytes | None]], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` viewers, each on its own keep-alive connection, sending ``requests`` in turn for ``seconds``:
    requests per second (all viewers together) and the latency percentiles of every request."""
    import http.client

    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    start_line = threading.Barrier(clients + 1)
    stop = [0.0]

    def viewer(k: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        start_line.wait()
        n = 0
        while time.perf_counter() < stop[0]:
            method, path, body = requests[n % len(requests)]
            n += 1
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
            began = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(f"{path}: {answer.status}")
            latencies[k].append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=viewer, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop[0] = began + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    assert not failures, failures[:3]
    every = np.array([t for viewer_latencies in latencies for t in viewer_latencies])
    return {
        "clients": clients,
        "requests": len(every),
        "per_s": len(every) / elapsed,
        "p50_s": float(np.percentile(every, 50)),
        "p99_s": float(np.percentile(every, 99)),
    }


def under_load(
    kind: str, command: list[str], url: str, runs: int, live: Path, clients: list[int], seconds: float
) -> list[dict[str, float]]:
    """Start ``command`` (a server) and a process writing one more run (``live``) into what it serves; once the
    server answers, :func:`hammer` it with each number of ``clients`` in turn."""
    script = LIVE_DEEPSCOPE if kind == "deepscope" else LIVE_TENSORBOARD
    writer = subprocess.Popen([sys.executable, "-c", script, str(live), TAG])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url, process)
        deadline = time.monotonic() + 120
        while not (live.is_dir() and any(live.iterdir())):  # the writer has started (importing torch takes a while)
            assert writer.poll() is None and time.monotonic() < deadline, "the live run's writer did not start"
            time.sleep(0.1)
        time.sleep(2.0)  # its first flush
        requests = viewer_requests(kind, runs + 1)
        hammer(url, requests, 1, min(seconds, 3.0))  # warm-up: the first read of every run
        return [hammer(url, requests, n, seconds) for n in clients]
    finally:
        for child in (process, writer):
            child.terminate()
            child.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--load", action="store_true", help="time many viewers polling at once instead")
    parser.add_argument("--clients", default="1,16", help="with --load: numbers of viewers, in turn (default 1,16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="with --load: seconds per number of viewers")
    parser.add_argument("--workers", type=int, default=1, help="with --load: deepscope board --workers")
    args = parser.parse_args(argv)
    if args.load:
        return load_main(args)

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


def load_main(args: argparse.Namespace) -> dict[str, Any]:
    """``--load``: both servers polled by 1, then 16 viewers (``--clients``) while one more run is written."""
    clients = [int(n) for n in args.clients.split(",")]
    figures: dict[str, Any] = {"runs": args.runs, "points": args.points, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        root, logdir = Path(tmp) / "runs", Path(tmp) / "tb"
        write_store(root, args.runs, args.points)
        write_events(logdir, args.runs, args.points)
        port = free_port()
        tensorboard = [str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
        tensorboard += ["--load_fast", "true", "--reload_interval", "2"]
        url = f"http://127.0.0.1:{port}/"
        live = logdir / "live"
        figures["tensorboard"] = under_load("tensorboard", tensorboard, url, args.runs, live, clients, args.seconds)
        port = free_port()
        deepscope = [str(BIN / "deepscope"), "board", str(root), "--port", str(port), "--workers", str(args.workers)]
        url = f"http://127.0.0.1:{port}/"
        figures["deepscope"] = under_load("deepscope", deepscope, url, args.runs, root / "live", clients, args.seconds)
    print(
        f"board under load: {args.runs} runs x {args.points:,} points + 1 run being written; each viewer alternates "
        f"the run list and one tag's series of every run, {args.seconds:.0f} s per row "
        f"(deepscope --workers {args.workers})"
    )
    print(f"  {'viewers':>7} {'':>12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for k, n in enumerate(clients):
        for kind in ("tensorboard", "deepscope"):
            row = figures[kind][k]
            print(f"  {n:>7} {kind:>12} {row['per_s']:8.1f} {1e3 * row['p50_s']:8.0f} {1e3 * row['p99_s']:8.0f}")
        ratio = figures["deepscope"][k]["per_s"] / figures["tensorboard"][k]["per_s"]
        print(f"  {'':>7} {'deepscope / TensorBoard throughput':>40} {ratio:6.2f}x")
    ds_rows = figures["deepscope"]
    print(
        f"  deepscope: {clients[-1]} viewers get {ds_rows[-1]['per_s'] / ds_rows[0]['per_s']:.2f}x the throughput of "
        f"{clients[0]} (goal >= 1), p99 {1e3 * ds_rows[-1]['p99_s']:.0f} ms (goal < 1000)"
    )
    return figures


if __name__ == "__main__":
    main()
