"""What the typed answers (pydantic models, the OpenAPI schema at ``/openapi.json``) cost the board under load: the
board of this checkout beside the same board without them (``--base``, a git revision, by default the last one
before them), both serving the same store while one more run is written, polled by 1 and then 16 viewers as in
``bench_tensorboard_board.py --load`` (the run list and one tag's ``/api/scalars/batch`` of every run, in turn).

The two servers run at once and are polled in alternating slices (``--rounds`` of ``--seconds`` each), so a busy
machine slows both alike; printed: requests per second, p99 and the server's CPU time per request of each, and the
ratios with / without the models (about 1.00: a route that returns its own encoded ``Response`` is sent as it is,
never validated on the way out). The CPU time per request is the figure a loaded machine disturbs least.

    python bench/bench_board_openapi.py [--runs 100 --points 10000 --clients 1,16 --rounds 4 --seconds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_board_page import write_store
from bench_tensorboard_board import LIVE_DEEPSCOPE, TAG, free_port, hammer, viewer_requests, wait_http

REPO = Path(__file__).resolve().parent.parent
BASE = "262b7b1"  # the last revision whose board has no models (FastAPI(..., openapi_url=None))


def base_source(revision: str, into: Path) -> Path:
    """The ``src`` folder of ``revision`` of this repository, unpacked under ``into``."""
    archive = into / "base.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def cpu_s(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used, in seconds (Linux's ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(process: subprocess.Popen[bytes], url: str, requests: Any, clients: int, seconds: float) -> dict[str, float]:
    """:func:`hammer`'s figures, and the server's CPU seconds per request meanwhile."""
    before = cpu_s(process.pid)
    found = hammer(url, requests, clients, seconds)
    return {**found, "cpu_ms": 1e3 * (cpu_s(process.pid) - before) / max(found["requests"], 1)}


def serve(root: Path, src: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``deepscope board root`` from the package under ``src``, on a free port."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "deepscope", "board", str(root), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    wait_http(url, process)
    return process, url


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per server and number of viewers")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per slice")
    parser.add_argument("--base", default=BASE, help=f"the revision without the models (default {BASE})")
    args = parser.parse_args(argv)
    clients = [int(n) for n in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_store(root, args.runs, args.points)
        servers = {"without": base_source(args.base, Path(tmp)), "with": REPO / "src"}
        writer = subprocess.Popen([sys.executable, "-c", LIVE_DEEPSCOPE, str(root / "live"), TAG])
        started = {name: serve(root, src) for name, src in servers.items()}
        try:
            deadline = time.monotonic() + 120
            while not (root / "live").is_dir():
                assert writer.poll() is None and time.monotonic() < deadline, "the live run's writer did not start"
                time.sleep(0.1)
            time.sleep(2.0)
            requests = viewer_requests("deepscope", args.runs + 1)
            schema = __import__("urllib.request").request.urlopen(started["with"][1] + "openapi.json").read()
            assert b'"/api/scalars/batch"' in schema, "the board of this checkout serves no schema"
            for _, url in started.values():
                hammer(url, requests, 1, 3.0)  # warm-up: the first read of every run
            figures: dict[str, Any] = {"runs": args.runs, "points": args.points, "base": args.base}
            for n in clients:
                slices: dict[str, list[dict[str, float]]] = {name: [] for name in started}
                for k in range(args.rounds):
                    order = list(started) if k % 2 == 0 else list(started)[::-1]
                    for name in order:
                        slices[name].append(timed(*started[name], requests, n, args.seconds))
                figures[n] = {
                    name: {
                        "per_s": float(np.median([s["per_s"] for s in rows])),
                        "p99_s": float(np.median([s["p99_s"] for s in rows])),
                        "cpu_ms": float(np.median([s["cpu_ms"] for s in rows])),
                    }
                    for name, rows in slices.items()
                }
        finally:
            for process, _ in started.values():
                process.terminate()
                process.wait(timeout=30)
            writer.terminate()
            writer.wait(timeout=30)
    print(
        f"typed answers under load: {args.runs} runs x {args.points:,} points + 1 run being written; the board with "
        f"its models and /openapi.json beside the board of {args.base} without, {args.rounds} alternating slices of "
        f"{args.seconds:g} s each (medians)"
    )
    print(f"  {'viewers':>7} {'':>8} {'req/s':>8} {'p99 ms':>8} {'CPU ms/request':>15}")
    for n in clients:
        for name in ("without", "with"):
            row = figures[n][name]
            print(f"  {n:>7} {name:>8} {row['per_s']:8.1f} {1e3 * row['p99_s']:8.0f} {row['cpu_ms']:15.2f}")
        with_, without = figures[n]["with"], figures[n]["without"]
        print(f"  {'':>7} {'with / without: throughput':>37} {with_['per_s'] / without['per_s']:6.2f}x")
        print(f"  {'':>7} {'CPU per request':>37} {with_['cpu_ms'] / without['cpu_ms']:6.2f}x")
    return figures


if __name__ == "__main__":
    main()
