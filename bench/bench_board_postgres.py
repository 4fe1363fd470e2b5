"""The board over a PostgreSQL store against the same runs on SQLite, and what a team store costs at scale.

The scalars view: ``--runs`` runs (default 20) of ``--points`` points each (default 100,000, one tag) logged alike
into a directory (SQLite) and into a database; then, best of ``--repeats``, what the page asks for when it opens:
``GET /api/runs`` and one ``GET /api/scalars/batch?encoding=base64&max_points=2000`` for every run, through FastAPI's
test client. Cold: the encoded-answer cache emptied first (every run read, downsampled, encoded); warm: finished
runs answered from the cache after their change tokens are checked. Goal (issue 15): PostgreSQL within 1.5x of
SQLite.

The cost at 1,000 runs x 1,000,000 points (docs/scale.md): measured here at ``--runs`` runs, plus one run of
``--big`` points (default 1,000,000); the database's size per point, logging and reading one run at full size,
and the view's time per run, scaled to 1,000 runs.

Against ``--url`` (``postgresql://...``), or a throwaway server started here (tests/pg_cluster.py: needs Debian's
postgresql package, ``make postgres``). About a minute with the defaults.

    python bench/bench_board_postgres.py
    python bench/bench_board_postgres.py --runs 5 --points 10000 --big 100000 --repeats 2

``main(argv)`` returns the figures as a dict, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_store_postgres import _server

TEAM_RUNS, TEAM_POINTS = 1_000, 1_000_000


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, caches of the OS and of the server
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a report and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database (default: a throwaway server started here)")
    parser.add_argument("--runs", type=int, default=20, help="runs in the view (default 20)")
    parser.add_argument("--points", type=int, default=100_000, help="points per run (default 100,000)")
    parser.add_argument("--big", type=int, default=1_000_000, help="points of the one full-size run (default 1M)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the best counts (default 5)")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    import deepscope as ds
    from deepscope.dashboard import create_app
    from deepscope.store import Reader

    figures: dict[str, Any] = {"runs": args.runs, "points": args.points}
    rng = np.random.default_rng(0)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="bench-board-pg-"))
    try:
        with _server(args.url) as url:
            if url is None:
                return figures
            names = [f"{prefix}/run{k:03d}" for k in range(args.runs)]
            logged = {"sqlite": 0.0, "postgresql": 0.0}
            for name in names:
                values = rng.random(args.points)
                for place, where in (("sqlite", {"path": root / name}), ("postgresql", {"path": url, "name": name})):
                    start = time.perf_counter()
                    with ds.Run(**where) as run:  # type: ignore[arg-type]
                        run.log_series("train/loss", np.arange(args.points), values)
                    logged[place] += time.perf_counter() - start
            print(
                f"wrote {args.runs} runs x {args.points:,} points: SQLite {logged['sqlite']:.1f} s, "
                f"PostgreSQL {logged['postgresql']:.1f} s"
            )

            clients = {
                "sqlite": TestClient(create_app(root / prefix), base_url="http://127.0.0.1"),
                "postgresql": TestClient(create_app(url), base_url="http://127.0.0.1"),
            }
            served = {"sqlite": [n.removeprefix(prefix + "/") for n in names], "postgresql": names}
            for place, client in clients.items():
                listed = [r["name"] for r in client.get("/api/runs").json()]
                assert sorted(n for n in listed if n in served[place]) == served[place], place

            def view(place: str, cold: bool) -> Callable[[], None]:
                client = clients[place]
                query = {"tag": "train/loss", "runs": served[place], "max_points": 2000, "encoding": "base64"}

                def ask() -> None:
                    if cold:
                        client.app.state.views["scalars"].clear()  # as on the first look: every run read afresh
                    assert client.get("/api/runs").status_code == 200
                    answer = client.get("/api/scalars/batch", params=query)
                    assert answer.status_code == 200, answer.text

                return ask

            print(f"the scalars view (/api/runs + /api/scalars/batch of {args.runs} runs; best of {args.repeats}):")
            for state in ("cold", "warm"):
                for place in ("sqlite", "postgresql"):
                    figures[f"view_{state}_{place}_s"] = _best(view(place, state == "cold"), args.repeats)
                ratio = figures[f"view_{state}_postgresql_s"] / figures[f"view_{state}_sqlite_s"]
                figures[f"view_{state}_ratio"] = ratio
                print(
                    f"  {state}: SQLite {figures[f'view_{state}_sqlite_s'] * 1e3:7.1f} ms   PostgreSQL "
                    f"{figures[f'view_{state}_postgresql_s'] * 1e3:7.1f} ms   ratio {ratio:.2f}x (goal <= 1.5x)"
                )

            # ---- what a team store costs: one run at full size, the rest scaled from the view's runs ----------
            big = f"{prefix}/big"
            values = rng.standard_normal(args.big)
            start = time.perf_counter()
            with ds.Run(url, name=big) as run:
                run.log_series("train/loss", np.arange(args.big), values)
            figures["big_log_s"] = time.perf_counter() - start
            with Reader(url, big) as reader:
                figures["big_read_s"] = _best(lambda: reader.scalars("train/loss"), args.repeats)
            client = clients["postgresql"]
            query = {"tag": "train/loss", "runs": [big], "max_points": 2000, "encoding": "base64"}

            def big_cold() -> None:
                client.app.state.views["scalars"].clear()
                assert client.get("/api/scalars/batch", params=query).status_code == 200

            figures["big_view_cold_s"] = _best(big_cold, args.repeats)
            figures["big_view_warm_s"] = _best(
                lambda: client.get("/api/scalars/batch", params=query).raise_for_status(), args.repeats
            )
            import psycopg

            with psycopg.connect(url) as conn:
                size = conn.execute(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "WHERE c.relkind = 'r' AND c.relname LIKE 'deepscope%%'"
                ).fetchone()[0]
                points = conn.execute("SELECT sum(n) FROM deepscope_scalar_chunks").fetchone()[0]
            figures["bytes_per_point"] = int(size) / int(points)

            # The runs dimension where it does not involve points: 1,000 more runs of 20 tags each, made by SQL (no
            # points), then the listing every poll of the page asks for, and the change tokens of 1,000 runs.
            listed = f"{prefix}/listed/%"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO deepscope_runs (name, created_at) "
                    "SELECT %s || '/listed/' || g, 0 FROM generate_series(1, %s) g",
                    (prefix, TEAM_RUNS),
                )
                conn.execute(
                    "INSERT INTO deepscope_tags (run_id, name, kind, created_at) SELECT r.id, 'tag' || t, 'scalar', 0 "
                    "FROM deepscope_runs r, generate_series(1, 20) t WHERE r.name LIKE %s",
                    (listed,),
                )
                conn.execute(
                    "INSERT INTO deepscope_run_info (run_id, key, value) SELECT id, 'status', '\"finished\"' "
                    "FROM deepscope_runs WHERE name LIKE %s",
                    (listed,),
                )
                many = [row[0] for row in conn.execute("SELECT name FROM deepscope_runs WHERE name LIKE %s", (listed,))]
            try:
                from deepscope.dashboard.sources import source

                database = source(url)
                figures["list_1000_runs_s"] = _best(lambda: client.get("/api/runs").raise_for_status(), args.repeats)
                figures["stamps_1000_runs_s"] = _best(lambda: database.stamps(many), args.repeats)
            finally:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DELETE FROM deepscope_runs WHERE name LIKE %s", (listed,))
            per_run_cold = figures["view_cold_postgresql_s"] / args.runs
            per_run_warm = figures["view_warm_postgresql_s"] / args.runs
            scale = TEAM_POINTS / args.big
            team = {
                "team_size_gb": figures["bytes_per_point"] * TEAM_RUNS * TEAM_POINTS / 1e9,
                "team_log_one_run_s": figures["big_log_s"] * scale,
                "team_view_cold_one_run_s": figures["big_view_cold_s"] * scale,
                "team_view_cold_s": figures["big_view_cold_s"] * scale * TEAM_RUNS,
                "team_view_warm_s": per_run_warm * TEAM_RUNS,
            }
            figures.update(team)
            print(f"one run of {args.big:,} points in PostgreSQL:")
            print(f"  logged (log_series, create to close) {figures['big_log_s']:.2f} s")
            print(f"  read back whole {figures['big_read_s']:.3f} s")
            print(
                f"  the view of it: cold {figures['big_view_cold_s'] * 1e3:.1f} ms, warm "
                f"{figures['big_view_warm_s'] * 1e3:.1f} ms"
            )
            print(f"database size: {figures['bytes_per_point']:.1f} bytes per point (tables and indexes, all runs)")
            print(
                f"{TEAM_RUNS + args.runs + 1:,} runs of 20 tags: /api/runs {figures['list_1000_runs_s'] * 1e3:.1f} ms, "
                f"the change tokens of {TEAM_RUNS:,} runs {figures['stamps_1000_runs_s'] * 1e3:.1f} ms"
            )
            print(f"scaled to {TEAM_RUNS:,} runs x {TEAM_POINTS:,} points:")
            print(f"  database {team['team_size_gb']:.1f} GB")
            print(
                f"  the view of all runs at once: cold {team['team_view_cold_s']:.0f} s "
                f"({team['team_view_cold_one_run_s'] * 1e3:.0f} ms a run), warm {team['team_view_warm_s']:.2f} s "
                f"({per_run_warm * 1e3:.2f} ms a run; {per_run_cold * 1e3:.1f} ms a run cold at {args.points:,})"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
