"""The embedded store: schema and migrations, crash safety, live reading, downsampling, and refusing bad files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import deepscope as ds
from deepscope.errors import StoreError
from deepscope.store import Reader, downsample, list_runs, schema


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def small_run(path: Path, points: int = 10) -> Path:
    with ds.Run(path) as run:
        for i in range(points):
            run.log({"loss": 1.0 / (i + 1)}, step=i)
    return path


# ---- schema ------------------------------------------------------------------------------------------------------


def test_new_run_has_schema_version_migrations_and_wal(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        run.log({"a": 1.0})
        run.flush()
        conn = sqlite3.connect(tmp_path / "r" / "run.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        versions = [row[0] for row in conn.execute("SELECT version FROM migrations ORDER BY version")]
        assert versions == list(range(1, schema.SCHEMA_VERSION + 1))
        conn.close()


def test_migration_runs_on_resume_and_older_readers_refuse_the_newer_file(tmp_path, monkeypatch):
    path = small_run(tmp_path / "r")
    step = schema.Migration(schema.SCHEMA_VERSION + 1, "test: an extra table", "CREATE TABLE extra (x INTEGER)")
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
        m.setattr(schema, "SCHEMA_VERSION", step.version)
        with ds.Run(path, resume=True) as run:
            run.log({"loss": 0.0})
        with Reader(path) as reader:  # a reader of the same version reads the migrated run, old data included
            assert len(reader.scalars("loss")) == 11
    conn = sqlite3.connect(path / "run.db")
    assert conn.execute("SELECT name FROM migrations WHERE version = ?", (step.version,)).fetchone() == (step.name,)
    assert conn.execute("SELECT count(*) FROM extra").fetchone() == (0,)
    conn.close()
    before = digest(path / "run.db")
    with pytest.raises(StoreError, match="newer than this deepscope"):
        Reader(path)
    with pytest.raises(StoreError, match="newer than this deepscope"):
        ds.Run(path, resume=True)
    assert digest(path / "run.db") == before


# ---- crash safety ------------------------------------------------------------------------------------------------

CHILD = """
import sys, time
import deepscope as ds
run = ds.Run(sys.argv[1], flush_interval=0.2)
i = 0
while True:
    run.log({"x": float(i), "y": -float(i)}, step=i)
    if i == 2000:
        run.flush()
        print("flushed", i, flush=True)
    i += 1
"""


def test_sigkill_mid_logging_leaves_an_intact_database_with_every_flushed_point(tmp_path):
    path = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["flushed", "2000"]
        time.sleep(0.8)  # several flush intervals of logging as fast as the loop goes
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    db = path / "run.db"
    assert integrity(db) == "ok"
    with Reader(path) as reader:
        x, y = reader.scalars("x"), reader.scalars("y")
        assert reader.info()["status"] == "interrupted"
    last = int(x.steps[-1])
    assert last > 2000  # written by the interval flushes alone, after the explicit flush
    np.testing.assert_array_equal(x.steps, np.arange(last + 1))  # a prefix of what was logged: no gap, no loss
    np.testing.assert_array_equal(x.values, np.arange(last + 1, dtype=float))
    np.testing.assert_array_equal(y.steps[: last + 1], x.steps[: len(y.steps)])
    assert abs(len(y) - len(x)) <= 1  # x and y of one call are in the same batch, y at most one call behind
    assert x.wall_times[-1] > killed_at - 1.2  # at most a flush interval (and a busy machine's slack) lost


def test_reader_sees_new_points_within_the_flush_interval_while_the_run_is_written(tmp_path):
    interval = 0.2
    run = ds.Run(tmp_path / "live", flush_interval=interval)
    run.log({"loss": 0.0}, step=0)
    run.flush()
    reader = Reader(tmp_path / "live")
    delays = []
    stop = threading.Event()

    def train() -> None:
        step = 1
        while not stop.is_set():
            run.log({"loss": float(step)}, step=step)
            step += 1
            time.sleep(0.001)

    thread = threading.Thread(target=train)
    thread.start()
    try:
        for _ in range(5):
            logged_at = time.time()
            target = reader.scalars("loss").steps[-1] + 1  # a step not yet on disk when asked
            while reader.scalars("loss").steps[-1] < target:
                time.sleep(0.01)
            delays.append(time.time() - logged_at)
        assert reader.info()["status"] == "running"
    finally:
        stop.set()
        thread.join()
        run.close()
    assert max(delays) < interval + 0.5, delays
    series = reader.scalars("loss")
    np.testing.assert_array_equal(series.steps, np.arange(len(series)))
    reader.close()


def test_a_full_queue_makes_logging_wait_never_drop(tmp_path):
    with ds.Run(tmp_path / "r", max_pending=16, flush_interval=0.05) as run:
        for i in range(3000):
            run.log({"a": float(i), "b": float(-i)}, step=i)
    with Reader(tmp_path / "r") as reader:
        for tag, sign in (("a", 1), ("b", -1)):
            series = reader.scalars(tag)
            np.testing.assert_array_equal(series.steps, np.arange(3000))
            np.testing.assert_array_equal(series.values, sign * np.arange(3000.0))


def test_disk_full_is_a_clear_error_and_keeps_what_was_written(tmp_path, monkeypatch):
    path = tmp_path / "full"
    monkeypatch.setattr(schema, "WRITE_PRAGMAS", (*schema.WRITE_PRAGMAS, "max_page_count=40"))
    run = ds.Run(path, flush_interval=0.05)
    run.log({"kept": 1.0})
    run.flush()
    rng = np.random.default_rng(0)
    with pytest.raises(StoreError, match=r"full.*not in the store.*intact"):
        for i in range(200):
            run.log({f"tag{i}/{j}": float(v) for j, v in enumerate(rng.random(100))}, step=i)
        run.flush()
    with pytest.raises(StoreError, match="full"):
        run.close()
    assert integrity(path / "run.db") == "ok"
    with Reader(path) as reader:
        assert reader.scalars("kept").values.tolist() == [1.0]


def test_a_failed_batch_leaves_no_picture_of_an_explanation_set_behind(tmp_path, monkeypatch):
    """Pictures are written before their row commits; when the transaction fails they are removed again, so the
    files/ directory never holds a picture that no row refers to (nor a row without its pictures)."""
    from deepscope.track.records import Confusion, ExplanationSet

    path = tmp_path / "full"
    monkeypatch.setattr(schema, "WRITE_PRAGMAS", (*schema.WRITE_PRAGMAS, "max_page_count=40"))
    run = ds.Run(path, flush_interval=0.05)
    pictures = np.zeros((1, 2, 4, 4, 3), np.uint8)
    explained = ExplanationSet("e", 0, pictures[0], ["m"], pictures, pictures, [["x", "y"]], np.zeros((1, 2)))
    k = 300  # a confusion matrix too large for the 40 pages left: the batch's transaction fails after the PNGs
    with pytest.raises(StoreError, match="full"):
        run.log_records([explained, Confusion("c", 0, np.ones((k, k), np.int64), [str(i) for i in range(k)])])
        run.flush()
    with pytest.raises(StoreError):
        run.close()
    assert integrity(path / "run.db") == "ok"
    assert not list(path.rglob("*.png"))
    with Reader(path) as reader:
        assert reader.tags() == {}


# ---- refusing what is not ours -----------------------------------------------------------------------------------


def test_a_directory_that_is_not_a_run_is_refused_untouched(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"not a run")
    with pytest.raises(StoreError, match=r"not a deepscope run: it holds cat\.jpg"):
        ds.Run(target)
    with pytest.raises(StoreError, match="no deepscope run"):
        Reader(target)
    assert sorted(p.name for p in target.iterdir()) == ["cat.jpg"]


def test_an_existing_run_needs_resume_and_a_second_writer_is_refused(tmp_path):
    path = small_run(tmp_path / "r")
    with pytest.raises(StoreError, match="already holds a run; pass resume=True"):
        ds.Run(path)
    with ds.Run(path, resume=True), pytest.raises(StoreError, match="being written by another process"):
        ds.Run(path, resume=True)


@pytest.mark.parametrize("damage", ["garbage", "foreign sqlite", "damaged page"])
def test_a_corrupted_or_foreign_database_is_named_and_left_untouched(tmp_path, damage):
    path = tmp_path / "r"
    db = path / "run.db"
    if damage == "garbage":
        path.mkdir()
        db.write_bytes(np.random.default_rng(0).bytes(8192))
    elif damage == "foreign sqlite":
        path.mkdir()
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE songs (title TEXT)")
        conn.close()
    else:
        small_run(path, points=schema.CHUNK * 3)
        size = db.stat().st_size
        page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
        with open(db, "r+b") as handle:  # overwrite a page in the middle of the file
            handle.seek((size // page // 2) * page)
            handle.write(b"\xff" * page)
    before = digest(db)
    with pytest.raises(StoreError, match=str(db)):
        ds.Run(path, resume=True)
    with pytest.raises(StoreError, match=str(db)), Reader(path) as reader:
        for tag in reader.tags():
            reader.scalars(tag)
    assert digest(db) == before
    assert not (path / "run.db-wal").exists() or damage == "damaged page"


READ_ONLY_CHILD = """
import sys
import deepscope as ds
from deepscope.errors import StoreError
for target in sys.argv[1:]:
    try:
        ds.Run(target)
        print("created", target)
    except StoreError as e:
        print("StoreError", e)
"""


def test_a_read_only_directory_is_a_clear_error_at_creation(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    command = [sys.executable, "-c", READ_ONLY_CHILD, str(locked / "new-run"), str(locked)]
    if os.geteuid() == 0:  # root ignores permissions unless it gives up the capability to
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        command = ["setpriv", "--bounding-set=-dac_override,-fowner", *command]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o755)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 2 and all(line.startswith("StoreError") for line in lines), lines
    assert "cannot create the run directory" in lines[0] and "Permission denied" in lines[0]
    assert "cannot write in" in lines[1] and "Permission denied" in lines[1]
    assert list(locked.iterdir()) == []


# ---- reading -----------------------------------------------------------------------------------------------------


def test_list_runs_finds_runs_at_any_depth_with_status_and_tag_kinds(tmp_path):
    small_run(tmp_path / "a")
    small_run(tmp_path / "group" / "b")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.db").write_bytes(b"x" * 4096)
    (tmp_path / "empty-dir").mkdir()
    with ds.Run(tmp_path / "group" / "live") as live:
        live.note("hello")
        live.flush()
        runs = {run.name: run for run in list_runs(tmp_path)}
    assert sorted(runs) == ["a", "bad", "group/b", "group/live"]
    assert runs["a"].status == "finished" and runs["a"].tags == {"loss": "scalar"}
    assert runs["group/live"].status == "running" and runs["group/live"].tags == {"notes": "text"}
    assert runs["bad"].status == "unreadable" and "run.db" in runs["bad"].error
    assert list_runs(tmp_path)[3].status == "finished"


def test_reading_a_missing_tag_or_the_wrong_kind_is_a_clear_error(tmp_path):
    path = small_run(tmp_path / "r")
    with ds.Run(path, resume=True) as run:
        run.note("hi")
    with Reader(path) as reader:
        with pytest.raises(ds.BadInputError, match=r"no tag 'los'.*'loss'"):
            reader.scalars("los")
        with pytest.raises(ds.BadInputError, match="holds scalars"):
            reader.records("loss")
        with pytest.raises(ds.BadInputError, match="'notes' holds text records, not scalar"):
            reader.scalars("notes")


def _envelope_holds(steps, values, kept, width):
    """Every point has a kept point within ``width`` steps that is at most as low and one at most as high (a NaN:
    a kept NaN within ``width``): the downsampled line bounds the original at its resolution."""
    ks, kv = steps[kept], values[kept]
    near = np.abs(steps[:, None] - ks[None, :]) < width
    finite = ~np.isnan(values)
    lower = (near & (kv[None, :] <= values[:, None])).any(axis=1)
    upper = (near & (kv[None, :] >= values[:, None])).any(axis=1)
    nan_near = (near & np.isnan(kv)[None, :]).any(axis=1)
    return bool((lower & upper)[finite].all() and nan_near[~finite].all())


@pytest.mark.parametrize("case", ["sorted", "restarted loop", "nan and inf", "uneven steps"])
def test_downsample_keeps_the_envelope_first_and_last(case):
    rng = np.random.default_rng(len(case))
    n = 4000
    steps = np.arange(n) * 3
    values = np.cumsum(rng.normal(size=n))
    if case == "restarted loop":
        steps = np.concatenate((np.arange(2500), np.arange(1000, 2500)))
    elif case == "nan and inf":
        values[rng.choice(n, 30, replace=False)] = np.nan
        values[rng.choice(n, 5, replace=False)] = np.inf
        values[rng.choice(n, 5, replace=False)] = -np.inf
    elif case == "uneven steps":
        steps = np.sort(rng.choice(10**7, n, replace=False))
    kept = downsample(steps, values, 200)
    assert len(kept) <= 200 and (np.diff(kept) > 0).all()
    order = np.argsort(steps, kind="stable")
    assert {order[0], order[-1]} <= set(kept.tolist())
    width = (steps.max() - steps.min() + 1) / ((200 - 2) // (3 if np.isnan(values).any() else 2))
    assert _envelope_holds(steps, values, kept, width)
    assert not _envelope_holds(steps, values, kept[::2], width)  # the check can fail


def test_a_million_points_downsample_to_two_thousand_keeping_spikes_and_zoom_refines(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(0)
    steps = np.arange(n)
    values = np.sin(steps / 5000.0) + rng.normal(0, 0.01, n)
    spikes = np.array([1234, 250_001, 999_000])
    values[spikes] = [50.0, -50.0, np.nan]
    with ds.Run(tmp_path / "big") as run:
        run.log_series("signal", steps, values)
    with Reader(tmp_path / "big") as reader:
        full = reader.scalars("signal")
        np.testing.assert_array_equal(full.values, values)  # bit-exact, NaN included
        coarse = reader.scalars("signal", max_points=2000)
        assert 1000 < len(coarse) <= 2000 and coarse.total == n and coarse.downsampled
        assert {0, n - 1, *spikes} <= set(coarse.steps.tolist())
        assert np.nanmax(coarse.values) == 50.0 and np.nanmin(coarse.values) == -50.0
        zoom = reader.scalars("signal", start=250_000, end=252_000, max_points=2000)
        assert zoom.total == 2001 and len(zoom) <= 2000 and 250_001 in zoom.steps
        assert zoom.steps.min() >= 250_000 and zoom.steps.max() <= 252_000
        exact = reader.scalars("signal", start=250_000, end=251_000, max_points=2000)
        np.testing.assert_array_equal(exact.values, values[250_000:251_001])  # fits: nothing dropped


def test_values_still_on_their_way_from_a_gpu_are_awaited_by_the_writer_thread_in_order(tmp_path):
    import torch

    from deepscope.store.writer import DeferredScalars, Writer

    class Event:  # stands in for torch.cuda.Event: says which thread waited for it
        waited_in: ClassVar[list[str]] = []

        def synchronize(self) -> None:
            self.waited_in.append(threading.current_thread().name)

    writer = Writer(tmp_path / "r")
    writer.put([("a", 0, -1, 1.0, 0.0)], 1)
    host = torch.tensor([1.0, 5.0], dtype=torch.float64)
    writer.put([DeferredScalars(["a", "b"], [1, 0], 3, 2.0, host, Event())], 2)
    writer.put([("a", 2, -1, 3.0, 2.0)], 1)
    writer.close()
    assert len(Event.waited_in) == 1 and Event.waited_in[0].startswith("deepscope-writer")
    with Reader(tmp_path / "r") as reader:
        a, b = reader.scalars("a"), reader.scalars("b")
    assert a.steps.tolist() == [0, 1, 2] and a.values.tolist() == [0.0, 1.0, 2.0]
    assert (b.steps.tolist(), b.values.tolist(), b.epochs.tolist(), b.wall_times.tolist()) == ([0], [5.0], [3], [2.0])


# ---- the scalar layout: loose rows while written, packed chunks once closed --------------------------------------


def _layout(db: Path, tag: str) -> tuple[int, list[int]]:
    """How many loose rows ``tag`` has and the sizes of its chunks (checked against their blobs), oldest first."""
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        (tag_id,) = conn.execute("SELECT id FROM tags WHERE name = ?", (tag,)).fetchone()
        loose = conn.execute("SELECT count(*) FROM scalars WHERE tag_id = ?", (tag_id,)).fetchone()[0]
        chunks = conn.execute(
            "SELECT n, length(steps), length(vals) FROM scalar_chunks WHERE tag_id = ? ORDER BY id", (tag_id,)
        )
        sizes = []
        for n, steps_bytes, values_bytes in chunks:
            assert steps_bytes == values_bytes == 8 * n
            sizes.append(n)
    return loose, sizes


@pytest.mark.parametrize(
    ("sessions", "chunks"),
    [
        ([10], [10]),
        ([schema.CHUNK + 5], [schema.CHUNK, 5]),
        ([3, 2 * schema.CHUNK - 1, 7], [3, schema.CHUNK, schema.CHUNK - 1, 7]),  # resumed twice
    ],
)
def test_closing_packs_the_loose_points_and_every_read_is_exact(tmp_path, sessions, chunks):
    """While a run is written, a tag's newest points (fewer than CHUNK) are loose rows; closing folds them into
    a last, shorter chunk, so a finished run is read from packed blobs only. Live, closed and resumed, a read
    gives back exactly the points logged, in order, NaN and infinities included."""
    rng = np.random.default_rng(0)
    path, db = tmp_path / "r", tmp_path / "r" / "run.db"
    steps, values, epochs = np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
    for k, n in enumerate(sessions):
        new = rng.standard_normal(n)
        new[::7] = np.nan
        new[1::11] = np.inf
        new[2::13] = -np.inf
        new_steps = np.arange(len(steps), len(steps) + n)
        new_epochs = np.where(new_steps % 3 == 0, -1, new_steps // 100)
        steps, values = np.concatenate((steps, new_steps)), np.concatenate((values, new))
        epochs = np.concatenate((epochs, new_epochs))
        run = ds.Run(path, resume=k > 0)
        run.log_series("loss", new_steps, new, epochs=new_epochs)
        run.flush()
        assert _layout(db, "loss")[0] == n % schema.CHUNK  # still being written: the newest points are rows
        for when in ("live", "closed"):
            with Reader(path) as reader:
                series = reader.scalars("loss")
            np.testing.assert_array_equal(series.steps, steps, err_msg=when)
            assert series.values.tobytes() == values.tobytes(), when  # bit for bit: NaN and infinities kept
            np.testing.assert_array_equal(series.epochs, epochs, err_msg=when)
            assert (np.diff(series.wall_times) >= 0).all() and len(series.wall_times) == len(steps)
            if when == "live":
                run.close()
    assert _layout(db, "loss") == (0, chunks)


def test_records_thinned_to_max_records_spread_evenly_with_first_and_last(tmp_path):
    from deepscope.errors import BadInputError
    from deepscope.track.records import Histogram

    def record(step: int) -> Histogram:
        return Histogram("w", step, 0.0, 1.0, np.array([step, 1]), "fc", "weight", step / 2, 1.0, 0.0, 1.0, step + 1)

    with ds.Run(tmp_path / "r") as run:
        run.log_records([record(step) for step in range(0, 100, 2)])  # 50 records, steps 0, 2, ..., 98
        run.log({"s": 1.0})
    with Reader(tmp_path / "r") as reader:
        assert reader.count("w") == 50 and reader.count("w", 10, 30) == 11
        thinned = reader.records("w", max_records=5)
        # indices round(linspace(0, 49, 5)) = 0, 12, 24, 37, 49
        assert [h.step for h in thinned] == [0, 24, 48, 74, 98]
        assert all(h.counts.tolist() == [h.step, 1] and h.mean == h.step / 2 for h in thinned)  # whole rows
        assert [h.step for h in reader.records("w", 10, 30, max_records=3)] == [10, 20, 30]
        assert [h.step for h in reader.records("w", max_records=50)] == list(range(0, 100, 2))
        with pytest.raises(BadInputError, match="max_records"):
            reader.records("w", max_records=1)
        with pytest.raises(BadInputError, match="holds scalars"):
            reader.count("s")


def test_a_run_opened_by_a_relative_path_keeps_its_files_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    import deepscope as ds
    from deepscope.store import Reader

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run = ds.Run("runs/relative")
    monkeypatch.chdir(tmp_path / "b")  # a notebook moving on while the run is open
    run.log({"picture": np.zeros((4, 4), dtype=np.uint8)}, step=0)
    run.close()
    assert not (tmp_path / "b" / "runs").exists()
    with Reader(tmp_path / "a" / "runs" / "relative") as reader:
        (image,) = reader.records("picture")
    assert image.pixels.shape[:2] == (4, 4)


# ---- the format on disk ------------------------------------------------------------------------------------------


def test_a_run_written_by_the_first_release_reads_as_it_did_then(tmp_path):
    """tests/fixtures/store_v1/ was written, and store_v1.json read from it, by the release whose format is schema
    version 1 (tests/fixtures/store_v1.py): today's reader must read every record of every kind the same."""
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    try:
        import store_v1
    finally:
        sys.path.pop(0)
    copy = shutil.copytree(store_v1.RUN, tmp_path / "store_v1")  # a reader may add -shm files beside it
    expected = json.loads(store_v1.DESCRIPTION.read_text())
    found = store_v1.describe(copy)
    assert sorted(found["tags"].values()) == sorted(expected["tags"].values())
    assert len(set(expected["tags"].values())) == 16  # every kind, including checkpoints
    for tag, series in found["series"].items():  # fields added to a record since are at their defaults (None)
        for record, then in zip(series.get("records", []), expected["series"][tag].get("records", [])):
            for name in set(record) - set(then):
                assert record.pop(name) is None, (tag, name)
    for tag in expected["series"]:
        assert found["series"][tag] == expected["series"][tag], tag
    assert found == expected
