"""The listing of runs that a board's routes share: one per request burst, the runs' configs read with it (the HParams
tab costs nothing more), and never stale: a run added, changed or being written is seen by the next request."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import deepscope as ds

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope.dashboard import api, create_app, sources
from deepscope.dashboard.views.hparams import data as hparams_data
from deepscope.dashboard.views.hparams.data import HParams, hparams

LOCAL = "http://127.0.0.1"


def _run(path: Path, config: dict[str, Any] | None = None, loss: float = 1.0) -> None:
    with ds.Run(path, config=config) as run:
        run.log({"loss": loss}, step=0)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _run(tmp_path / "a", {"lr": 0.1})
    _run(tmp_path / "b", {"lr": 0.01})
    _run(tmp_path / "bare")
    return tmp_path


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The runs the HParams view opens from now on (the listing's own reads are not counted)."""
    opened: list[str] = []
    real = hparams_data.open_reader

    def counting(served: Any, run: str) -> Any:
        opened.append(run)
        return real(served, run)

    monkeypatch.setattr(hparams_data, "open_reader", counting)
    return opened


def test_overview_is_the_runs_and_the_views_from_one_listing(root: Path) -> None:
    app = create_app(root)
    client = TestClient(app, base_url=LOCAL)
    served = app.state.served
    before = served.listings
    overview = client.get("/api/overview").json()
    assert served.listings == before + 1
    assert overview == {"runs": client.get("/api/runs").json(), "views": client.get("/api/views").json()}
    assert [run["name"] for run in overview["runs"]] == ["a", "b", "bare"]
    assert overview["views"]["hparams"] is True and overview["views"]["scalars"] is True


def test_the_hparams_tab_opens_no_run_and_its_answer_reads_each_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _opened(monkeypatch)
    served = sources.Directory(root.resolve())
    state = HParams()
    assert api.views(served, {"hparams": state})["hparams"] is True
    assert opened == []  # the configs came with the listing: whether the tab shows costs no opening
    listings = served.listings
    answer = hparams(served, ["loss"], state)
    assert served.listings == listings + 1  # one listing for the whole answer (its runs and their tokens)
    assert sorted(opened) == ["a", "b"]  # each configured run opened once, for its metric; "bare" never
    assert {run["name"]: run["config"] for run in answer["runs"]} == {"a": {"lr": 0.1}, "b": {"lr": 0.01}}
    opened.clear()
    assert hparams(served, ["loss"], state) == answer and opened == []  # nothing changed: nothing opened


def test_requests_at_the_same_time_share_listings(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = sources.Directory(root.resolve())
    folders = sources.run_folders

    def slow(root: Path) -> Any:
        time.sleep(0.2)  # every listing long enough for the others to arrive while it runs
        return folders(root)

    monkeypatch.setattr(sources, "run_folders", slow)
    state = HParams()
    start = threading.Barrier(4)
    answers: dict[str, Any] = {}
    calls = {
        "overview": lambda: api.overview(served, {"hparams": state}),
        "hparams": lambda: hparams(served, None, state),
        "runs": lambda: api.runs(served),
        "views": lambda: api.views(served, {"hparams": state}),
    }

    def ask(name: str) -> None:
        start.wait()
        answers[name] = calls[name]()

    threads = [threading.Thread(target=ask, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert served.listings < len(calls)  # a page's first requests walk the runs once or twice, not once each
    assert answers["overview"] == {"runs": answers["runs"], "views": answers["views"]}
    assert [run["name"] for run in answers["hparams"]["runs"]] == ["a", "b"]


def test_a_run_added_or_changed_is_seen_by_the_next_request(root: Path) -> None:
    client = TestClient(create_app(root), base_url=LOCAL)

    def rows() -> dict[str, Any]:
        answer = client.get("/api/hparams", params={"metrics": ["loss"]}).json()
        return {run["name"]: (run["config"], run["metrics"]["loss"]["last"]) for run in answer["runs"]}

    assert rows() == {"a": ({"lr": 0.1}, 1.0), "b": ({"lr": 0.01}, 1.0)}
    _run(root / "c", {"lr": 1.0}, loss=3.0)  # added
    with ds.Run(root / "a", resume=True) as run:  # changed: its config and its last loss
        run.config["lr"] = 0.5
        run.log({"loss": 2.0}, step=1)
    with ds.Run(root / "bare", resume=True) as run:  # configured now
        run.config["seed"] = 7
    expected = {"a": ({"lr": 0.5}, 2.0), "b": ({"lr": 0.01}, 1.0), "bare": ({"seed": 7}, 1.0), "c": ({"lr": 1.0}, 3.0)}
    assert rows() == expected
    assert [run["name"] for run in client.get("/api/overview").json()["runs"]] == ["a", "b", "bare", "c"]


def test_the_tab_appears_once_a_run_has_a_config(tmp_path: Path) -> None:
    _run(tmp_path / "bare")
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    assert client.get("/api/overview").json()["views"]["hparams"] is False
    live = ds.Run(tmp_path / "live", config={"lr": 0.1}, flush_interval=0.05)
    try:
        live.log({"loss": 1.0}, step=0)
        live.flush()
        assert client.get("/api/overview").json()["views"]["hparams"] is True  # a run being written counts too
        live.config["momentum"] = 0.9
        live.flush()
        answer = client.get("/api/hparams").json()
        assert answer["runs"][0]["config"] == {"lr": 0.1, "momentum": 0.9}  # read again while it is written
    finally:
        live.close()


def test_a_starting_server_reads_the_listing_and_the_hparams_answer_in_the_background(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepscope.dashboard import warm

    app = create_app(root)
    warm(app).join(timeout=30)
    listings = app.state.served.listings
    assert listings >= 1 and app.state.warmed_s > 0
    opened = _opened(monkeypatch)
    answer = TestClient(app, base_url=LOCAL).get("/api/hparams").json()
    assert [run["name"] for run in answer["runs"]] == ["a", "b"] and answer["chosen"] == ["loss"]
    assert opened == []  # every config and default metric was read as the server started
    assert app.state.served.listings == listings + 1  # the request took its own listing: none older than it asked
