"""The board over a PostgreSQL store (a throwaway server, tests/pg_cluster.py): the same runs logged into a run
directory and into the database give the same answers, modulo what names a file; files come from the database by
their reference only; finished runs are cached by their change token and a resumed one is seen; and the page, in
headless Chromium, draws the scalar chart. Skips, saying why, where no PostgreSQL server can be started."""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, serving

import deepscope as ds
from deepscope.errors import StoreError
from deepscope.store.postgres import Database
from deepscope.store.records import Embedding, Histogram, Image

sys.path.insert(0, str(Path(__file__).parent))
import pg_cluster

sys.path[:1] = []

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient  # noqa: E402

from deepscope.dashboard import create_app  # noqa: E402

# One server for the file: under pytest-xdist its tests stay on one worker.
pytestmark = pytest.mark.xdist_group("board_postgres")

LOCAL = "http://127.0.0.1"
RUNS = ("relu", "group/tanh")
POINTS = 3000  # more than the page asks for (2,000): the answer is downsampled
SHORT = 6


def _log(run: ds.Run, scale: float) -> None:
    """Every kind the comparison covers, with the same wall times in both stores."""
    rng = np.random.default_rng(int(scale))
    steps = np.arange(POINTS)
    values = scale * rng.random(POINTS)
    values[[10, 11, 12]] = [np.nan, np.inf, -np.inf]
    values[1234] = 1e6  # a spike that downsampling keeps
    run.log_series("train/loss", steps, values, epochs=steps // 1000, wall_times=1.7e9 + steps)
    run.log_series(
        "train/acc", np.arange(SHORT), 1 / (1 + np.arange(SHORT) * scale), wall_times=1.7e9 + np.arange(SHORT)
    )
    run.log_records(
        [
            Histogram(
                "weight/fc", step, -1.0, 1.0, np.array([1, 2, 3, step]), layer="fc", kind="weight", count=6 + step
            )
            for step in range(3)
        ]
    )
    pixels = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    run.log_records([Image("samples", step, pixels + step, caption=f"step {step}", wall_time=1.7e9) for step in (0, 5)])
    run.note("a note <b>as text</b>", step=0)
    features = rng.normal(size=(40, 8)).astype(np.float32)
    labels = [[str(k % 3), str(k % 2)] for k in range(40)]
    thumbnails = rng.integers(0, 256, (40, 5, 5, 3), dtype=np.uint8)
    projections = {"tsne-2d": rng.normal(size=(40, 2))}
    run.log_records(
        [Embedding("embedding", 0, features, labels, ["label", "prediction"], thumbnails, projections=projections)]
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The same runs in a directory and in a database: ``(directory, url)``."""
    why = pg_cluster.missing()
    if why is not None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("runs")
    with pg_cluster.cluster() as url:
        for name, scale in zip(RUNS, (1.0, 2.0)):
            for where in ({"path": root / name}, {"path": url, "name": name}):
                with ds.Run(**where, config={"scale": scale}) as run:  # type: ignore[arg-type]
                    _log(run, scale)
        yield root, url


def _clients(stores: tuple[Path, str]) -> tuple[TestClient, TestClient]:
    root, url = stores
    return TestClient(create_app(root), base_url=LOCAL), TestClient(create_app(url), base_url=LOCAL)


def _same(answer: Any) -> Any:
    """An answer without what names a file (its url, which holds the record's own random name) or when a run
    was created: what may differ between two stores of the same runs."""
    if isinstance(answer, dict):
        return {k: _same(v) for k, v in answer.items() if k not in ("url", "created_at")}
    if isinstance(answer, list):
        return [_same(v) for v in answer]
    return answer


ASKED = [
    ("/api/runs", {}),
    ("/api/views", {}),
    ("/api/scalars/batch", {"tag": "train/loss"}),
    ("/api/scalars/batch", {"tag": "train/loss", "encoding": "base64", "start": 1000, "end": 1999}),
    ("/api/scalars/batch", {"tag": "train/acc", "runs": ["group/tanh", "relu"], "max_points": 4}),
    ("/api/scalars", {"run": "relu", "tag": "train/loss", "max_points": 10_000}),
    ("/api/histograms", {"run": "group/tanh", "tag": "weight/fc"}),
    ("/api/histograms", {"run": "relu", "tag": "weight/fc", "max_steps": 2}),
    ("/api/images", {"run": "relu", "tag": "samples"}),
    ("/api/text", {"run": "relu", "tag": "notes"}),
    ("/api/embeddings", {"run": "relu"}),
    ("/api/embedding/labels", {"run": "relu", "tag": "embedding"}),
    ("/api/projection", {"run": "group/tanh", "tag": "embedding", "name": "tsne-2d"}),
    ("/api/projection", {"run": "relu", "tag": "embedding", "name": "pca-2d"}),
    ("/api/neighbors", {"run": "relu", "tag": "embedding", "index": 3, "k": 5}),
]


@pytest.mark.parametrize(("route", "params"), ASKED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(ASKED)])
def test_the_api_over_a_database_answers_as_over_a_directory(
    stores: tuple[Path, str], route: str, params: dict[str, Any]
) -> None:
    on_disk, in_database = _clients(stores)
    for _ in range(2):  # the second time from the caches, keyed by each run's change token
        expected, answer = on_disk.get(route, params=params), in_database.get(route, params=params)
        assert answer.status_code == expected.status_code == 200, answer.text
        if route == "/api/projection":  # computed points in float32: the same to rounding
            e, a = expected.json(), answer.json()
            assert _same({**e, "points": None, "seconds": 0}) == _same({**a, "points": None, "seconds": 0})
            points = [np.frombuffer(base64.b64decode(x["points"]["base64"]), "<f4") for x in (e, a)]
            np.testing.assert_allclose(points[1], points[0], rtol=1e-5, atol=1e-5)
        elif route == "/api/runs":  # the runs of this comparison (other tests add runs to the database)
            assert [r for r in _same(answer.json()) if r["name"] in RUNS] == _same(expected.json())
        else:
            assert _same(answer.json()) == _same(expected.json())
    if route == "/api/runs":
        assert {r["name"]: r["status"] for r in answer.json() if r["name"] in RUNS} == dict.fromkeys(RUNS, "finished")


def test_files_come_from_the_database_by_reference_only(stores: tuple[Path, str]) -> None:
    on_disk, in_database = _clients(stores)
    for run in RUNS:
        params = {"run": run, "tag": "samples"}
        expected, answer = (
            on_disk.get("/api/images", params=params).json(),
            in_database.get("/api/images", params=params),
        )
        for mine, theirs in zip(answer.json()["points"], expected["points"]):
            served = in_database.get(mine["url"])
            assert served.status_code == 200 and served.headers["content-type"] == "image/png"
            assert served.content == on_disk.get(theirs["url"]).content  # the same PNG bytes
            assert served.headers["x-content-type-options"] == "nosniff"
    other = in_database.get("/api/images", params={"run": "group/tanh", "tag": "samples"}).json()["points"][0]["url"]
    reference = parse_qs(urlsplit(other).query)["path"][0]
    assert in_database.get("/api/file", params={"run": "group/tanh", "path": reference}).status_code == 200
    for run, path in (
        ("relu", reference),  # another run's file
        ("relu", "files/../../etc/passwd"),
        ("relu", "/etc/passwd"),
        ("relu", "run.db"),
        ("nobody", "files/1/0.png"),
    ):
        assert in_database.get("/api/file", params={"run": run, "path": path}).status_code == 404, path


def test_the_projector_s_thumbnails_come_from_the_database(stores: tuple[Path, str]) -> None:
    on_disk, in_database = _clients(stores)
    for index in (0, 39):
        params = {"run": "group/tanh", "tag": "embedding", "index": index}
        expected = on_disk.get("/api/thumbnail", params=params)
        answer = in_database.get("/api/thumbnail", params=params)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.content == expected.content
    params = {"run": "group/tanh", "tag": "embedding", "index": 40}
    assert in_database.get("/api/thumbnail", params=params).status_code == 404


def test_a_database_board_needs_its_token_and_names_no_run_it_lacks(stores: tuple[Path, str]) -> None:
    _, url = stores
    client = TestClient(create_app(url, token="sesame"), base_url="http://board.example.org")
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs", params={"token": "sesame"}).status_code == 200
    assert client.get("/api/scalars", params={"token": "sesame", "run": "nobody", "tag": "x"}).status_code == 404
    with pytest.raises(StoreError, match="cannot connect"):
        create_app(url.rsplit(":", 1)[0] + ":1/postgres")


def test_a_resumed_run_is_seen_and_its_new_points_served(stores: tuple[Path, str]) -> None:
    _, url = stores
    app = create_app(url)
    client = TestClient(app, base_url=LOCAL)
    encoded = app.state.views["scalars"]  # the app's cache of encoded answers
    params = {"tag": "live", "runs": ["live"]}
    with ds.Run(url, name="live") as run:
        run.log({"live": 1.0}, step=0)
        run.flush()
        assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0]
        assert {r["name"]: r["status"] for r in client.get("/api/runs").json()}["live"] == "running"
        run.log({"live": 0.5}, step=1)
        run.flush()
        encoded.clear()
        assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5]
        assert len(encoded) == 0  # a run being written is read afresh each time
    assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5]
    assert len(encoded) == 1  # a finished one is kept, under its change token
    with ds.Run(url, name="live", resume=True) as run:
        run.log({"live": 0.25}, step=2)
    assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5, 0.25]
    assert {r["name"]: r["status"] for r in client.get("/api/runs").json()}["live"] == "finished"


def test_ds_board_serves_a_database(stores: tuple[Path, str]) -> None:
    _, url = stores
    shown = ds.board(url, port=0, proxy=False)
    try:
        with urllib.request.urlopen(shown.url + "api/runs", timeout=10) as answer:
            names = [r["name"] for r in json.loads(answer.read())]
    finally:
        shown.stop()
    assert set(RUNS) <= set(names)


def test_the_page_draws_the_scalar_chart_from_a_database_and_new_points_appear(stores: tuple[Path, str]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
    _, url = stores
    problems: list[str] = []
    live = ds.Run(url, name="page-live", flush_interval=0.05)
    for step in range(3):
        live.log({"live/loss": 2.0 - step}, step=step)
    live.flush()
    with live, serving(create_app(url)) as address, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{address}/")
            chart = '.card[data-tag="train/acc"] .plot'
            page.wait_for_function(
                f"() => {{ const gd = document.querySelector('{chart}'); return gd?.data && gd.data.length >= 4 }}",
                timeout=15_000,
            )
            raw = page.evaluate(
                f"() => document.querySelector('{chart}').data.filter((t) => t.opacity === 0.25)"
                ".map((t) => [t.meta, t.x, t.y])"
            )
            # The live refresh: a point logged while the page is open is drawn.
            count = """() => { const gd = document.querySelector('.card[data-tag="live/loss"] .plot');
                               const t = gd && gd.data && gd.data.find((t) => t.meta === 'page-live');
                               return t ? t.x.length : 0; }"""
            page.wait_for_function(f"() => ({count})() === 3", timeout=10_000)
            live.log({"live/loss": 0.5}, step=3)
            live.flush()
            page.wait_for_function(f"() => ({count})() === 4", timeout=10_000)
        finally:
            browser.close()
    drawn = {name: (x, y) for name, x, y in raw}
    assert sorted(drawn) == sorted(RUNS)
    for name, scale in zip(RUNS, (1.0, 2.0)):
        x, y = drawn[name]
        assert x == list(range(SHORT))
        np.testing.assert_allclose(y, 1 / (1 + np.arange(SHORT) * scale))
    assert not problems


def test_the_board_needs_only_a_role_that_may_read(stores: tuple[Path, str]) -> None:
    """A team gives the board's host a role that can SELECT and nothing else: every view still answers."""
    import psycopg

    _, url = stores
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS board_reader")
        conn.execute("CREATE ROLE board_reader LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO board_reader")
    reader_url = url.replace("postgresql://postgres@", "postgresql://board_reader@")
    _, in_database = _clients(stores)
    read_only = TestClient(create_app(reader_url), base_url=LOCAL)
    for route, params in ASKED[:9]:
        answer = read_only.get(route, params=params)
        assert answer.status_code == 200, answer.text
        assert _same(answer.json()) == _same(in_database.get(route, params=params).json())


def test_the_board_answers_at_once_after_the_database_restarted(stores: tuple[Path, str]) -> None:
    _, url = stores
    app = create_app(url)
    client = TestClient(app, base_url=LOCAL)
    params = {"tag": "train/acc", "runs": list(RUNS)}
    before = client.get("/api/scalars/batch", params=params).json()
    pg_cluster.restart(url)  # every connection cut; the board's is found dead before its next use
    time.sleep(Database.CHECK_AFTER_S)
    app.state.views["scalars"].clear()
    assert client.get("/api/scalars/batch", params=params).json() == before


def test_deepscope_board_on_a_database_it_cannot_reach_says_so_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'deepscope[postgres]'")
    from deepscope.cli import main

    assert main(["board", "postgresql://me:s3cret@127.0.0.1:1/none"]) == 2
    said = capsys.readouterr().err
    assert "deepscope board: cannot connect to postgresql://me@127.0.0.1:1/none" in said
    assert "s3cret" not in said


def test_a_board_started_on_an_empty_database_shows_runs_as_they_come(stores: tuple[Path, str]) -> None:
    """A team's board may start before anyone logged: no tables yet, no runs; the first run appears."""
    import psycopg

    _, url = stores
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fresh")
        conn.execute("CREATE DATABASE fresh")
    fresh = url.rsplit("/", 1)[0] + "/fresh"
    client = TestClient(create_app(fresh), base_url=LOCAL)
    assert client.get("/api/runs").json() == []
    assert not any(client.get("/api/views").json().values())
    assert client.get("/api/scalars/batch", params={"tag": "x"}).json() == {"tag": "x", "series": []}
    with ds.Run(fresh, name="first") as run:
        run.log({"x": 1.0}, step=0)
    assert [r["name"] for r in client.get("/api/runs").json()] == ["first"]
    assert client.get("/api/scalars/batch", params={"tag": "x"}).json()["series"][0]["values"] == [1.0]
