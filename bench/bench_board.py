"""The board's JSON API: what the scalars view asks for, timed through FastAPI's test client (no network).

A directory of ``--runs`` runs (default 100) of ``--points`` points each (default 10,000, one tag) is written
once; then, best of ``--repeats``: ``GET /api/runs`` (list and tags, no series), every run's
``GET /api/scalars?max_points=2000`` (what the page asked for to draw 100 overlaid lines), and both together;
then the batched view the page uses now, ``/api/runs`` and one ``GET /api/scalars/batch?encoding=base64`` for
all runs: cold (encoded-answer cache emptied first) and warm (finished runs from the cache), and cold with the
arrays as JSON numbers (``encoding=json``, the default for other clients) for comparison.
Separately, one tag of 1,000,000 points served downsampled to at most 2,000 points, and a zoom into 1 % of it;
and a histogram series of ``--histograms`` steps (default 100,000) served thinned to 500 steps.
Goals (issue 4): the scalars view under 300 ms, the million-point series under 200 ms.

    python bench/bench_board.py
    python bench/bench_board.py --runs 10 --points 1000 --repeats 2

``main(argv)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, the OS page cache
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _requester(url: str, paths: list[str]) -> Callable[[], None]:
    """A function sending ``paths`` in turn over one keep-alive HTTP connection to the server at ``url``."""
    import http.client

    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def send() -> None:
        for path in paths:
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, path

    return send


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="points of the one long series")
    parser.add_argument("--histograms", type=int, default=100_000, help="steps of the one long histogram series")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    import deepscope as ds
    from deepscope.dashboard import board, create_app

    rng = np.random.default_rng(0)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        start = time.perf_counter()
        for k in range(args.runs):
            with ds.Run(root / f"run{k:03d}") as run:
                run.log_series("train/loss", np.arange(args.points), rng.random(args.points))
        print(f"wrote {args.runs} runs x {args.points:,} points in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        app = create_app(root)
        client = TestClient(app, base_url="http://127.0.0.1")
        encoded = app.state.views["scalars"]  # the app's cache of encoded scalar answers
        figures["create_app_s"] = time.perf_counter() - start
        names = [r["name"] for r in client.get("/api/runs").json()]
        assert len(names) == args.runs

        def runs() -> None:
            assert client.get("/api/runs").status_code == 200

        def scalars() -> None:
            for name in names:
                answer = client.get("/api/scalars", params={"run": name, "tag": "train/loss", "max_points": 2000})
                assert answer.status_code == 200

        def view() -> None:
            runs()
            scalars()

        def batch(encoding: str = "base64") -> None:  # what the page asks for
            params = {"tag": "train/loss", "runs": names, "max_points": 2000, "encoding": encoding}
            answer = client.get("/api/scalars/batch", params=params)
            assert answer.status_code == 200

        def batch_view_cold() -> None:
            encoded.clear()  # as on the first look: every run read, downsampled and encoded
            runs()
            batch()

        def batch_view_cold_json() -> None:
            encoded.clear()
            runs()
            batch("json")

        def batch_view_warm() -> None:
            runs()
            batch()

        figures["runs_s"] = _best(runs, args.repeats)
        figures["batch_view_cold_s"] = _best(batch_view_cold, args.repeats)
        figures["batch_view_warm_s"] = _best(batch_view_warm, args.repeats)
        figures["batch_view_cold_json_s"] = _best(batch_view_cold_json, args.repeats)
        figures["scalars_all_runs_s"] = _best(scalars, args.repeats)
        figures["scalars_view_s"] = _best(view, args.repeats)
        served = board(root)  # a real server: uvicorn in a thread of this process
        try:
            paths = ["/api/runs"] + ["/api/scalars?" + urlencode({"run": n, "tag": "train/loss"}) for n in names]
            figures["served_view_s"] = _best(_requester(served.url, paths), args.repeats)
            query = {"tag": "train/loss", "runs": names, "encoding": "base64"}
            batched = ["/api/runs", "/api/scalars/batch?" + urlencode(query, doseq=True)]
            send = _requester(served.url, batched)

            def served_cold() -> None:
                served.app.state.views["scalars"].clear()
                send()

            figures["served_batch_view_cold_s"] = _best(served_cold, args.repeats)
            figures["served_batch_view_warm_s"] = _best(send, args.repeats)
        finally:
            served.stop()

        with ds.Run(root / "big") as run:
            run.log_series("train/loss", np.arange(args.big), rng.standard_normal(args.big))
        big = {"run": "big", "tag": "train/loss", "max_points": 2000}
        zoom = {**big, "start": args.big // 2, "end": args.big // 2 + args.big // 100}
        answer = client.get("/api/scalars", params=big).json()
        assert answer["total"] == args.big and len(answer["steps"]) <= 2000
        figures["big_downsampled_s"] = _best(lambda: client.get("/api/scalars", params=big), args.repeats)
        figures["big_zoom_s"] = _best(lambda: client.get("/api/scalars", params=zoom), args.repeats)

        from deepscope.track.records import Histogram

        counts = rng.integers(0, 100, 64)
        with ds.Run(root / "hist") as run:
            run.log_records(
                Histogram("w", step, -1.0, 1.0, counts, "fc", "weight", 0.0, 1.0, 0.0, 1.0, 6400)
                for step in range(args.histograms)
            )
        long = {"run": "hist", "tag": "w"}
        answer = client.get("/api/histograms", params=long).json()
        assert answer["total"] == args.histograms and len(answer["points"]) == min(args.histograms, 500)
        figures["histograms_thinned_s"] = _best(lambda: client.get("/api/histograms", params=long), args.repeats)

    print(f"create_app:                                     {figures['create_app_s'] * 1e3:8.1f} ms")
    print(f"GET /api/runs ({args.runs} runs):                        {figures['runs_s'] * 1e3:8.1f} ms")
    print(
        f"GET /api/scalars x {args.runs} ({args.points:,} points each):  {figures['scalars_all_runs_s'] * 1e3:8.1f} ms"
    )
    print(f"scalars view (both; goal < 300 ms):             {figures['scalars_view_s'] * 1e3:8.1f} ms")
    print(f"the same from a uvicorn server, keep-alive:     {figures['served_view_s'] * 1e3:8.1f} ms")
    print(f"batched view: /api/runs + /api/scalars/batch:   {figures['batch_view_cold_s'] * 1e3:8.1f} ms")
    print(f"  again, finished runs from the cache:          {figures['batch_view_warm_s'] * 1e3:8.1f} ms")
    print(f"  nothing cached, arrays as JSON numbers:       {figures['batch_view_cold_json_s'] * 1e3:8.1f} ms")
    print(f"  both from a uvicorn server, keep-alive:       {figures['served_batch_view_cold_s'] * 1e3:8.1f} ms")
    print(f"  again, from the cache:                        {figures['served_batch_view_warm_s'] * 1e3:8.1f} ms")
    print(f"{args.big:,} points to <= 2,000 (goal < 200 ms):  {figures['big_downsampled_s'] * 1e3:8.1f} ms")
    print(f"zoom into 1 % of them:                          {figures['big_zoom_s'] * 1e3:8.1f} ms")
    print(f"{args.histograms:,} histograms of 64 bins to 500 steps:   {figures['histograms_thinned_s'] * 1e3:8.1f} ms")
    return figures


if __name__ == "__main__":
    main()
