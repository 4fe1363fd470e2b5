"""One damaged run never takes the others down: damaged runs of each kind beside a healthy one, every view asked
(FastAPI's test client); the listing and live answers that viewers share."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import deepscope as ds
from deepscope.store import Reader
from deepscope.track.records import Confusion, Histogram, Image, PRCurve

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope.dashboard import create_app
from deepscope.dashboard.sources import Directory, Shared

LOCAL = "http://127.0.0.1"
LOSS = np.linspace(1.0, 0.0, 500)

# name -> how the copy of the healthy run is damaged (SQL on its database)
DAMAGED = {
    "bad_info": "UPDATE run_info SET value = 'not json{' WHERE key = 'status'",
    "bad_chunk": "UPDATE scalar_chunks SET vals = x'010203'",
    "bad_histogram": "UPDATE histograms SET counts = x'010203' WHERE step = 1",
    "bad_dtype": "UPDATE histograms SET counts_dtype = 'no such dtype' WHERE step = 2",
    "bad_json": "UPDATE objects SET data = '{broken' WHERE step IN (1, 5)",
    "bad_config": "UPDATE config SET value = 'not json{'",
}


def _healthy(path: Path) -> None:
    with ds.Run(path, config={"lr": 0.1}) as run:
        run.log_series("loss", np.arange(len(LOSS)), LOSS)
        run.log_records(
            [
                Histogram(
                    "weights",
                    step,
                    -1.0,
                    1.0,
                    np.array([1, 2, 3]),
                    layer="fc",
                    kind="weight",
                    mean=0.0,
                    std=1.0,
                    zero_fraction=0.0,
                    norm=1.0,
                    count=6,
                )
                for step in range(3)
            ]
        )
        run.note("first", step=0)
        run.note("second", step=5)
        run.log_records([Image("samples", step, np.full((4, 4, 3), 10 * step, np.uint8)) for step in range(2)])
        counts = [np.array(c) for c in ([3, 2, 0], [3, 1, 0], [0, 2, 3], [0, 1, 3])]
        curve = [np.array([0.5, 2 / 3, 1.0]), np.array([1.0, 2 / 3, 0.0])]
        run.log_records([PRCurve("pr", step, np.array([0.0, 0.5, 1.0]), *counts, *curve) for step in range(2)])
        run.log_records([Confusion("cm", step, np.array([[3, 1], [0, 2]]) + step, ["a", "b"]) for step in range(2)])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    _healthy(root / "healthy")
    for name, damage in DAMAGED.items():
        shutil.copytree(root / "healthy", root / name)
        with sqlite3.connect(root / name / "run.db") as db:
            db.execute(damage)
    shutil.copytree(root / "healthy", root / "truncated")
    db_file = root / "truncated" / "run.db"
    db_file.write_bytes(db_file.read_bytes()[: db_file.stat().st_size // 2])
    (root / "not_a_db").mkdir()
    (root / "not_a_db" / "run.db").write_bytes(b"\0" * 4096)
    # A symlink to a run outside the served directory, and a run whose files/ leads outside it.
    _healthy(root.parent / "outside")
    (root / "linked").symlink_to(root.parent / "outside")
    shutil.copytree(root / "healthy", root / "files_out")
    shutil.rmtree(root / "files_out" / "files")
    (root / "files_out" / "files").symlink_to(root.parent / "outside" / "files")
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url=LOCAL)


def test_runs_and_views_list_every_run_and_name_the_unreadable_ones(client: TestClient, root: Path) -> None:
    for route in ("/api/runs", "/api/views"):
        assert client.get(route).status_code == 200, route
    listed = {run["name"]: run for run in client.get("/api/runs").json()}
    assert "linked" not in listed  # a symlink out of the served directory is not followed
    assert listed["healthy"]["status"] == "finished" and listed["healthy"]["error"] is None
    for name in ("bad_info", "truncated", "not_a_db"):
        assert listed[name]["status"] == "unreadable" and listed[name]["error"], name
        assert str(root) not in listed[name]["error"]
    assert "run_info value of 'status' is not JSON" in listed["bad_info"]["error"]
    for name in ("bad_chunk", "bad_histogram", "bad_json", "bad_config", "files_out"):
        assert listed[name]["status"] == "finished", name
    views = client.get("/api/views").json()
    assert views["scalars"] and views["distributions"] and views["text"] and views["images"] and views["evaluation"]


def test_scalars_batch_serves_the_readable_runs_and_lists_the_damaged_one(client: TestClient) -> None:
    answer = client.get("/api/scalars/batch", params={"tag": "loss", "max_points": 1000})
    assert answer.status_code == 200
    batch = answer.json()
    served = {series["run"]: series for series in batch["series"]}
    assert served["healthy"]["values"] == LOSS.tolist()
    assert "bad_chunk" not in served
    assert [u["run"] for u in batch["unreadable"]] == ["bad_chunk"]
    assert "packed chunk 0 is damaged" in batch["unreadable"][0]["error"]
    answer = client.get("/api/scalars", params={"run": "bad_chunk", "tag": "loss"})
    assert answer.status_code == 404 and "damaged" in answer.json()["detail"]


@pytest.mark.parametrize(("run", "step"), [("bad_histogram", 1), ("bad_dtype", 2)])
def test_a_damaged_histogram_is_listed_and_the_others_served(client: TestClient, run: str, step: int) -> None:
    healthy = client.get("/api/histograms", params={"run": "healthy", "tag": "weights"}).json()
    assert [p["step"] for p in healthy["points"]] == [0, 1, 2] and healthy["unreadable"] == []
    answer = client.get("/api/histograms", params={"run": run, "tag": "weights"})
    assert answer.status_code == 200
    damaged = answer.json()
    assert [p["step"] for p in damaged["points"]] == [s for s in (0, 1, 2) if s != step]
    assert [u["step"] for u in damaged["unreadable"]] == [step] and not damaged["downsampled"]
    assert [p for p in damaged["points"]] == [p for p in healthy["points"] if p["step"] != step]


def test_broken_json_in_a_record_spoils_that_record_only(client: TestClient, root: Path) -> None:
    text = client.get("/api/text", params={"run": "bad_json", "tag": "notes"}).json()
    assert [p["text"] for p in text["points"]] == ["first"] and [u["step"] for u in text["unreadable"]] == [5]
    assert "not JSON" in text["unreadable"][0]["error"] and str(root) not in text["unreadable"][0]["error"]
    images = client.get("/api/images", params={"run": "bad_json", "tag": "samples"}).json()
    assert [p["step"] for p in images["points"]] == [0] and [u["step"] for u in images["unreadable"]] == [1]
    for route, tag in (("/api/pr_curve", "pr"), ("/api/confusion_matrix", "cm")):
        latest = client.get(route, params={"run": "bad_json", "tag": tag})
        assert latest.status_code == 200, route
        assert latest.json()["step"] == 0 and latest.json()["steps"] == [0]  # the last one that can be read
        assert [u["step"] for u in latest.json()["unreadable"]] == [1]
        asked = client.get(route, params={"run": "bad_json", "tag": tag, "step": 1})
        assert asked.status_code == 404 and "not JSON" in asked.json()["detail"]
        healthy = client.get(route, params={"run": "healthy", "tag": tag}).json()
        assert healthy["step"] == 1 and healthy["unreadable"] == []
    cm = client.get("/api/confusion_matrix", params={"run": "healthy", "tag": "cm"}).json()
    assert cm["counts"] == [[4, 2], [1, 3]]


def test_a_damaged_config_does_not_hide_the_run(client: TestClient, root: Path) -> None:
    with Reader(root / "bad_config") as reader, pytest.raises(ds.errors.StoreError, match="config value of 'lr'"):
        reader.config()
    answer = client.get("/api/scalars", params={"run": "bad_config", "tag": "loss", "max_points": 1000})
    assert answer.json()["values"] == LOSS.tolist()


def test_files_only_from_the_runs_own_folder(client: TestClient) -> None:
    images = client.get("/api/images", params={"run": "healthy", "tag": "samples"}).json()
    path = images["points"][0]["url"].split("path=")[1].replace("%2F", "/")
    assert client.get("/api/file", params={"run": "healthy", "path": path}).status_code == 200
    # files_out's files/ is a symlink to another run's: the same reference is refused.
    assert client.get("/api/file", params={"run": "files_out", "path": path}).status_code == 404
    assert client.get("/api/scalars", params={"run": "linked", "tag": "loss"}).status_code == 404


def test_unreadable_runs_are_404_naming_why(client: TestClient, root: Path) -> None:
    for run in ("truncated", "not_a_db"):
        answer = client.get("/api/text", params={"run": run, "tag": "notes"})
        assert answer.status_code == 404, run
        assert "cannot be read" in answer.json()["detail"] and str(root) not in answer.text
    # Only bad_info's info is damaged: its records still read.
    assert client.get("/api/text", params={"run": "bad_info", "tag": "notes"}).json()["points"][0]["text"] == "first"


# ---- what concurrent viewers share --------------------------------------------------------------------------------


def test_shared_calls_never_get_an_answer_computed_before_they_asked() -> None:
    shared = Shared()
    starts: list[float] = []
    lock = threading.Lock()

    def make() -> float:
        began = time.monotonic()
        with lock:
            starts.append(began)
        time.sleep(0.05)
        return began

    answers: list[tuple[float, float]] = []

    def viewer() -> None:
        for _ in range(5):
            asked = time.monotonic()
            answers.append((asked, shared.get("key", make)))

    threads = [threading.Thread(target=viewer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 40
    assert all(started >= asked for asked, started in answers)  # never an older computation
    assert len(starts) < 40  # viewers asking together shared computations
    with pytest.raises(ZeroDivisionError):  # a failure reaches the caller (and the next call tries again)
        shared.get("key", lambda: 1 / 0)
    assert shared.get("key", lambda: 2.0) == 2.0


def test_the_listing_reads_only_runs_that_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepscope.dashboard import sources

    for name in ("a", "b"):
        with ds.Run(tmp_path / name) as run:
            run.log({"x": 1.0}, step=0)
    read: list[str] = []
    summary = sources.summary
    monkeypatch.setattr(sources, "summary", lambda root, run_dir: read.append(run_dir.name) or summary(root, run_dir))
    served = Directory(tmp_path.resolve())
    assert [run.name for run in served.runs()] == ["a", "b"] and sorted(read) == ["a", "b"]
    read.clear()
    assert [run.tags for run in served.runs()] == [{"x": "scalar"}] * 2 and read == []
    with ds.Run(tmp_path / "a", resume=True) as run:
        run.log({"y": 2.0}, step=1)
        run.flush()
        assert {run.name: run.status for run in served.runs()} == {"a": "running", "b": "finished"}
    listed = {run.name: run for run in served.runs()}
    assert listed["a"].status == "finished" and set(listed["a"].tags) == {"x", "y"}
    assert "a" in read and "b" not in read
