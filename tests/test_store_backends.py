"""The store on each backend: a run directory (SQLite) and a named run in a PostgreSQL database (a throwaway server,
tests/pg_cluster.py) write and read the same records, live, resumed, packed, thinned and downsampled alike.

The PostgreSQL cases skip, saying why, where no server can be started (``make postgres`` installs one)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deepscope as ds
from deepscope.errors import StoreError
from deepscope.store import Reader, schema

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import pg_cluster
import store_v1

sys.path[:2] = []

BACKENDS = ["sqlite", "postgresql"]


def _comparable(described: dict[str, Any]) -> dict[str, Any]:
    """A description without what differs by place: the run's info and the random part of file names."""
    text = json.dumps({key: value for key, value in described.items() if key != "info"})
    return json.loads(re.sub(r"files/\d+/\d+-[0-9a-f]{12}", "files/<record>", text))


def test_every_kind_reads_back_as_from_the_first_release(store):
    """The records of the schema-1 fixture, logged again into each backend, read as they do from the fixture."""
    where = store.at("every-kind")
    store_v1.write(where["path"], where.get("name"))
    expected = _comparable(json.loads(store_v1.DESCRIPTION.read_text()))
    found = _comparable(store_v1.describe(where["path"], where.get("name")))
    for tag, series in found["series"].items():  # fields added to a record since are at their defaults (None)
        for record, then in zip(series.get("records", []), expected["series"][tag].get("records", [])):
            for name in set(record) - set(then):
                assert record.pop(name) is None, (tag, name)
    for tag in expected["series"]:
        assert found["series"][tag] == expected["series"][tag], tag
    assert found == expected


def test_a_reader_sees_the_points_of_a_live_run_and_its_status(store):
    with store.run("live", flush_interval=60) as run:
        for step in range(10):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.flush()
        with store.reader("live") as reader:
            assert reader.info()["status"] == "running"
            assert reader.scalars("loss").steps.tolist() == list(range(10))
            run.log({"loss": 0.0}, step=10)
            run.flush()
            assert len(reader.scalars("loss")) == 11  # the same reader, a new snapshot
    with store.reader("live") as reader:
        assert reader.info()["status"] == "finished"


def test_an_existing_run_needs_resume_one_writer_at_a_time_and_steps_continue(store):
    with store.run("r") as run:
        run.log({"loss": 1.0}, step=4)
        run.config["lr"] = 0.1
        with pytest.raises(StoreError, match=r"another process|being written"):
            store.run("r", resume=True)
    with pytest.raises(StoreError, match="already"):
        store.run("r")
    with store.run("r", resume=True) as run:
        assert run.config["lr"] == 0.1
        run.log({"loss": 0.5})  # the step after the last stored one
    with store.reader("r") as reader:
        assert reader.scalars("loss").steps.tolist() == [4, 5]


def test_packed_and_loose_points_read_exactly_while_open_and_after_closing(store):
    n = schema.CHUNK + 100  # one full chunk and loose rows while the run is open; all packed once it is closed
    steps = np.arange(n)
    values = np.cos(steps / 7.0)
    values[3] = np.nan
    with store.run("pack", flush_interval=60) as run:
        run.log_series("x", steps, values, epochs=steps // 1000)
        for step in range(n, n + 5):
            run.log({"x": float(step)}, step=step, epoch=9)
        run.flush()
        with store.reader("pack") as reader:
            open_series = reader.scalars("x")
    with store.reader("pack") as reader:
        closed = reader.scalars("x")
        window = reader.scalars("x", 100, 200)
        coarse = reader.scalars("x", max_points=50)
    for series in (open_series, closed):
        assert series.steps.tolist() == list(range(n + 5))
        np.testing.assert_array_equal(series.values[:n], values)  # NaN where it was logged
        assert series.epochs[n:].tolist() == [9] * 5
    assert window.steps.tolist() == list(range(100, 201))
    assert len(coarse) <= 50 and coarse.total == n + 5 and np.isnan(coarse.values).any()


def test_records_thinned_counted_and_their_files_listed(store):
    pixels = np.zeros((2, 3), np.uint8)
    with store.run("rec") as run:
        run.log_records([ds.track.Image("img", step, pixels + step) for step in range(9)])
    with store.reader("rec") as reader:
        assert reader.count("img") == 9 and reader.count("img", 2, 5) == 4
        assert [r.step for r in reader.records("img", max_records=3)] == [0, 4, 8]
        assert reader.records("img", 7)[0].pixels.tolist() == (pixels + 7).tolist()
        steps = [step for step, _, _ in reader.files("img")]
        assert steps == list(range(9))


def test_a_file_read_by_its_reference_only_and_a_change_token_per_write(store):
    """What the board reads through: a record's file by the reference ``files`` lists (nothing outside the run's
    files), and a token that is ``None`` while a writer holds the run and new after each write."""
    import io

    from PIL import Image as PILImage

    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    with store.run("token") as run:
        run.log_records([ds.track.Image("img", 0, pixels)])
        run.flush()
        with store.reader("token") as reader:
            assert reader.stamp() is None
    with store.reader("token") as reader:
        ((_, reference, _),) = reader.files("img")
        assert np.asarray(PILImage.open(io.BytesIO(reader.file(reference)))).tolist() == pixels.tolist()
        for outside in ("run.db", "files/../run.db", "/etc/passwd", "files/", "files/nothing.png"):
            with pytest.raises((ds.BadInputError, StoreError)):
                reader.file(outside)
        first = reader.stamp()
        assert first is not None and reader.stamp() == first
    with store.run("token", resume=True) as run:
        run.log({"x": 1.0}, step=0)
    with store.reader("token") as reader:
        assert reader.stamp() not in (None, first)


def test_a_run_that_is_not_there_is_a_clear_error(store):
    with pytest.raises(StoreError, match="no deepscope run"):
        store.reader("missing")


def test_a_run_in_a_database_needs_a_name(pg_server):
    with pytest.raises(StoreError, match="needs a name"):
        ds.Run(pg_server)
    with pytest.raises(StoreError, match="name the run"):
        Reader(pg_server)


def test_a_killed_writer_leaves_an_interrupted_run_with_everything_it_flushed(store):
    """The writer's process dies without closing: the run says "interrupted" (its lock went with the process: a
    file lock, or the database session) and holds every point flushed before."""
    where = store.at("killed")
    code = f"""
import os, signal
import deepscope as ds
run = ds.Run({str(where["path"])!r}, name={where.get("name")!r}, flush_interval=60)
for step in range(100):
    run.log({{"loss": float(step)}}, step=step)
run.flush()
run.log({{"loss": -1.0}}, step=100)  # queued, never flushed
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with store.reader("killed") as reader:
        assert reader.info()["status"] == "interrupted"
        assert reader.scalars("loss").values.tolist() == [float(step) for step in range(100)]
    with store.run("killed", resume=True) as run:  # and it can be taken up again
        run.log({"loss": 100.0})
    with store.reader("killed") as reader:
        assert reader.scalars("loss").steps.tolist()[-2:] == [99, 100]


def test_a_database_restarted_while_logging_loses_no_point_and_duplicates_none(pg_server):
    name = "restarted"
    logging = ds.Run(pg_server, name=name, flush_interval=0.02)
    with pytest.warns(RuntimeWarning, match="cannot be reached"), logging as run:
        for step in range(3000):
            run.log({"loss": float(step)}, step=step)
            if step == 1000:
                run.flush()
                pg_cluster.restart(pg_server)  # every connection is cut; the writer reconnects
            if step % 500 == 0:
                time.sleep(0.05)  # a few batches on each side of the restart
    with Reader(pg_server, name) as reader:
        series = reader.scalars("loss")
        assert series.steps.tolist() == list(range(3000))
        assert series.values.tolist() == [float(step) for step in range(3000)]
        assert reader.info()["status"] == "finished"


def test_a_batch_whose_commit_went_through_unanswered_is_not_written_again(pg_server):
    """The writer asks, once connected again, whether the batch it was committing is stored already."""
    from deepscope.store.postgres import PostgresWriter

    def recover(batch: int) -> bool:
        for _ in range(100):  # as the writer does: until the old session's lock is gone
            try:
                return store.recover(batch)
            except StoreError as e:
                assert store.transient(e)
                time.sleep(0.05)
        raise AssertionError("the run's lock was never free again")

    store = PostgresWriter(pg_server, "unanswered", resume=False)
    try:
        store.begin(7)
        store.set_value("config", "k", "1")
        store.commit()
        assert recover(7) is True
        assert recover(8) is False
    finally:
        store.close()


def test_a_run_named_alone_is_in_the_store_deepscope_store_names(store, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_STORE", store.url or str(store.root))
    name = f"{store.root.name}/named"
    with ds.Run(name=name, config={"lr": 0.5}) as run:
        run.log({"loss": 0.25})
    with Reader(name=name) as reader:
        assert reader.config() == {"lr": 0.5} and reader.scalars("loss").values.tolist() == [0.25]
        assert reader.info()["name"] == name
    if store.url is None:
        assert (store.root / name / "run.db").is_file()


def test_without_deepscope_store_a_named_run_is_a_directory_under_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    with ds.Run(name="fmnist/relu") as run:
        run.log({"loss": 1.0})
    assert (tmp_path / "runs" / "fmnist" / "relu" / "run.db").is_file()
    with pytest.raises(StoreError, match="give a run's path, or its name"):
        ds.Run()


def test_sync_copies_local_runs_once_and_completes_an_interrupted_copy(pg_server, tmp_path, capsys):
    from deepscope.cli import main
    from deepscope.store.postgres import PostgresWriter

    root = tmp_path / "local"
    store_v1.write(root / "every-kind")
    with ds.Run(root / "group" / "small") as run:
        run.log({"loss": 0.5})
    prefix = f"{tmp_path.name}-"
    (root / "group" / "small").rename(root / "group" / f"{prefix}small")
    PostgresWriter(pg_server, f"group/{prefix}small", resume=False).close()  # an earlier sync stopped after naming it

    assert main(["sync", str(root), pg_server]) == 0
    first = capsys.readouterr().out.splitlines()
    assert first == ["every-kind: copied", f"group/{prefix}small: copied"]
    assert main(["sync", str(root), pg_server]) == 0
    assert capsys.readouterr().out.splitlines() == ["every-kind: already there", f"group/{prefix}small: already there"]

    local, remote = store_v1.describe(root / "every-kind"), store_v1.describe(pg_server, "every-kind")
    assert _comparable(remote) == _comparable(local)  # every record, file and point, once
    assert remote["info"] | {"synced_from": None} == local["info"] | {"synced_from": None}
    with Reader(pg_server, f"group/{prefix}small") as reader:
        assert reader.scalars("loss").values.tolist() == [0.5]


def test_list_runs_names_each_run_with_its_status_and_tags(store):
    from deepscope.store import list_runs

    with store.run("a") as run:
        run.log({"loss": 1.0})
        run.note("hello")
    live = store.run("b")
    live.log({"acc": 0.5})
    live.flush()
    try:
        where = store.url or store.root
        prefix = "" if store.url is None else f"{store.root.name}/"
        found = {summary.name: summary for summary in list_runs(where) if summary.name.startswith(prefix)}
        assert set(found) == {f"{prefix}a", f"{prefix}b"}
        assert found[f"{prefix}a"].status == "finished" and found[f"{prefix}b"].status == "running"
        assert found[f"{prefix}a"].tags == {"loss": "scalar", "notes": "text"}
        assert found[f"{prefix}a"].created_at is not None
    finally:
        live.close()
    (summary,) = [s for s in list_runs(store.url or store.root) if s.name == f"{prefix}b"]
    assert summary.status == "finished"


def test_the_live_stamp_changes_with_each_commit_also_while_the_run_is_written(store):
    run = store.run("stamped", flush_interval=3600)
    try:
        run.log({"loss": 1.0}, step=0)
        run.flush()
        with store.reader("stamped") as reader:
            assert reader.stamp() is None  # a writer holds it: no cache may keep what is read
            first = reader.live_stamp()
            assert reader.live_stamp() == first  # nothing committed since
            run.log({"loss": 0.5}, step=1)
            run.flush()
            assert reader.live_stamp() != first  # what a live page watches
    finally:
        run.close()
    with store.reader("stamped") as reader:
        closed = reader.live_stamp()
        assert reader.stamp() is not None and reader.live_stamp() == closed  # at rest: the same each time
