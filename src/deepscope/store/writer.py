"""The one writer of a run: opens (or creates) its directory safely, then writes batches on a background thread.

The training thread only appends to an in-memory list under a lock (:meth:`Writer.put`); a daemon thread swaps
that list out and writes it in one transaction at least every ``flush_interval`` seconds, sooner when half of
``max_pending`` is waiting or when :meth:`Writer.flush` asks. When ``max_pending`` values are waiting the training
thread waits for the writer instead of dropping anything. A failed write (disk full, file removed, ...) stops the
writer and is raised by the next ``put``, ``flush`` or ``close``, saying how much was not stored; what was
committed before stays intact, because each batch is one SQLite transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from . import schema
from .records import Stored, codec_for

try:  # POSIX: one writing process per run, enforced by an advisory lock released even on SIGKILL
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock; SQLite still serialises the writes
    fcntl = None  # type: ignore[assignment]

ScalarRow = tuple[str, int, int, float, float]  # tag, step, epoch (-1: none), wall time, value
_NO_POINTS = (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.float64))


@dataclass
class StoredState:
    """What a resumed run already holds, for the ``Run`` to continue from."""

    kinds: dict[str, str] = field(default_factory=dict)
    last_steps: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created: bool = True


class DeferredScalars:
    """Scalars whose values are still on their way from an accelerator: ``host`` is valid once ``event`` is done.

    The training thread queues the copy without waiting for it; the writer thread waits instead.
    """

    __slots__ = ("epoch", "event", "host", "steps", "tags", "wall")

    def __init__(self, tags: list[str], steps: list[int], epoch: int, wall: float, host: Any, event: Any) -> None:
        self.tags, self.steps, self.epoch, self.wall, self.host, self.event = tags, steps, epoch, wall, host, event

    def rows(self) -> list[ScalarRow]:
        self.event.synchronize()
        return list(zip(self.tags, self.steps, repeat(self.epoch), repeat(self.wall), self.host.tolist()))


@dataclass(frozen=True)
class ScalarBatch:
    """Many points of one scalar tag at once (an import, a bulk log), already as arrays."""

    tag: str
    steps: np.ndarray
    values: np.ndarray
    epochs: np.ndarray
    wall_times: np.ndarray


@dataclass(frozen=True)
class SetValue:
    """A key of the run's config (``table="config"``) or info (``table="run_info"``); ``value`` is JSON text or
    ``None`` to delete the key."""

    table: str
    key: str
    value: str | None


class Writer:
    """Owns a run directory for writing; see the module's docstring."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        flush_interval: float = 2.0,
        max_pending: int = 100_000,
        name: str | None = None,
    ) -> None:
        if not flush_interval > 0:
            raise StoreError(f"flush_interval must be a positive number of seconds, not {flush_interval!r}")
        if max_pending < 1:
            raise StoreError(f"max_pending must be at least 1, not {max_pending!r}")
        # Absolute: files are written later, by a thread, when the working directory may have changed (a notebook's
        # os.chdir); a relative path would put them in another folder than run.db.
        self.path = Path(run_dir).absolute()
        self.db = schema.db_path(self.path)
        self.flush_interval = float(flush_interval)
        self.max_pending = int(max_pending)
        self._lock_file, self._conn, self.state = _open(self.path, resume)
        try:
            self._tag_ids: dict[str, int] = dict(self._conn.execute("SELECT name, id FROM tags").fetchall())
            self._row_counts: dict[int, int] = dict(
                self._conn.execute("SELECT tag_id, count(*) FROM scalars GROUP BY tag_id").fetchall()
            )
            now = time.time()
            info = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(), "started_at": now}
            if self.state.created:
                info |= {"name": name or self.path.name, "created_at": now}
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR REPLACE INTO run_info (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in info.items()],
            )
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._release()
            raise StoreError(f"cannot write to {self.db} ({e})") from e

        # The training thread takes the plain lock (cheap); waiting, in either direction, uses the condition on it.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._pending: list[Any] = []
        self._weight = 0
        self._seq = 0  # puts accepted so far
        self._committed = 0  # puts known to be in the database
        self._flush_wanted = 0
        self._stopping = False
        self._error: StoreError | None = None
        self._unwritten = 0
        self._last_commit = time.time()
        self._thread = threading.Thread(target=self._run, name=f"deepscope-writer:{self.path.name}", daemon=True)
        self._thread.start()

    # ---- the training thread's side -----------------------------------------------------------------------------

    def put(self, items: list[Any], weight: int) -> None:
        """Queue ``items`` (worth ``weight`` values); waits while ``max_pending`` values are already waiting."""
        with self._mutex:
            if self._error is not None or self._stopping:
                self._raise_closed()
            if self._weight and self._weight + weight > self.max_pending:
                self._wait_for_room(weight)
            self._pending.extend(items)
            self._weight += weight
            self._seq += 1
            if self._weight >= self.max_pending // 2:
                self._cond.notify_all()

    def _wait_for_room(self, weight: int) -> None:
        self._cond.notify_all()
        while self._weight and self._weight + weight > self.max_pending:
            if self._error is not None or self._stopping or not self._thread.is_alive():
                self._raise_closed()
            self._cond.wait(0.1)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed; raises ``StoreError`` if it cannot be."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flush_wanted = max(self._flush_wanted, target)
            self._cond.notify_all()
            while self._committed < target:
                if self._error is not None:
                    raise self._error
                if not self._thread.is_alive():
                    self._raise_closed()
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    raise StoreError(f"{self.db}: the writer did not catch up within {timeout} s")
                self._cond.wait(wait)

    def close(self, status: str = "finished") -> None:
        """Write the final status, drain the queue, stop the thread, close the file and release the run.

        Idempotent. Raises ``StoreError`` if anything logged could not be stored.
        """
        if not self._thread.is_alive() and self._lock_file is None:
            if self._error is not None:
                raise self._error
            return
        try:
            if self._error is None and not self._stopping:
                info = {"status": status, "ended_at": time.time()}
                self.put([SetValue("run_info", k, json.dumps(v)) for k, v in info.items()], 1)
        finally:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join()
            self._release()
        if self._error is not None:
            raise self._error

    @property
    def closed(self) -> bool:
        return self._stopping or self._error is not None

    def _raise_closed(self) -> None:
        if self._error is not None:
            raise self._error
        raise StoreError(f"the run at {self.path} is closed; open it again with resume=True to add to it")

    def _release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # ---- the writer thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug here must reach the user, not hang their training loop
            with self._cond:
                if self._error is None:
                    self._error = StoreError(f"the writer of {self.db} stopped: {type(e).__name__}: {e}")
                    self._error.__cause__ = e
        finally:
            # A closed run is one self-contained file: back to a rollback journal (possible only when no reader
            # has it open; otherwise it stays in WAL mode, which is as good), and closing the last connection
            # checkpoints the WAL into run.db and removes it.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA journal_mode=DELETE").fetchall()
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        next_commit = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                while not self._stopping:
                    if self._pending and (
                        self._flush_wanted > self._committed or self._weight >= self.max_pending // 2
                    ):
                        break
                    left = next_commit - time.monotonic()
                    if left <= 0:
                        if self._pending:
                            break
                        next_commit, left = time.monotonic() + self.flush_interval, self.flush_interval
                    self._cond.wait(left)
                batch, self._pending, self._weight = self._pending, [], 0
                seq, stopping = self._seq, self._stopping
                self._cond.notify_all()
            if batch:
                try:
                    self._write(batch, pack=stopping)
                except BaseException as e:  # every failure is kept and raised to the user
                    with self._cond:
                        self._unwritten = len(batch) + len(self._pending)
                        when = time.strftime("%H:%M:%S", time.localtime(self._last_commit))
                        self._error = StoreError(
                            f"writing to {self.db} failed: {type(e).__name__}: {e}. About {self._unwritten} "
                            f"logged items since the last write ({when}) are not in the store; everything "
                            "written before is intact."
                        )
                        self._error.__cause__ = e
                        self._cond.notify_all()
                    return
                self._last_commit = time.time()
            next_commit = time.monotonic() + self.flush_interval
            with self._cond:
                self._committed = seq
                self._cond.notify_all()
            if stopping:
                return

    def _write(self, batch: list[Any], pack: bool = False) -> None:
        """Write ``batch`` in one transaction; with ``pack`` (the run is closing) also fold every tag's remaining
        loose scalar rows into a last, shorter chunk, so a finished run reads as packed blobs only."""
        conn = self._conn
        tag_ids, row_counts = dict(self._tag_ids), dict(self._row_counts)
        written: list[Path] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows: list[ScalarRow] = []
            series: dict[int, list[tuple[np.ndarray, ...]]] = {}
            for item in batch:
                if type(item) is tuple:
                    rows.append(item)
                elif type(item) is DeferredScalars:
                    rows.extend(item.rows())
                else:
                    if rows:  # keep each tag's points in the order they were logged
                        self._group_rows(rows, series)
                        rows = []
                    self._write_item(item, series, written)
            if rows:
                self._group_rows(rows, series)
            for tag_id, parts in series.items():
                self._append_scalars(tag_id, *(np.concatenate(column) for column in zip(*parts)), pack=pack)
            if pack:
                for tag_id in [t for t, held in self._row_counts.items() if held and t not in series]:
                    self._append_scalars(tag_id, *_NO_POINTS, pack=True)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._tag_ids, self._row_counts = tag_ids, row_counts
            for path in written:
                path.unlink(missing_ok=True)
            raise

    def _tag(self, name: str, kind: str) -> int:
        tag_id = self._tag_ids.get(name)
        if tag_id is None:
            cursor = self._conn.execute(
                "INSERT INTO tags (name, kind, created_at) VALUES (?, ?, ?)", (name, kind, time.time())
            )
            tag_id = self._tag_ids[name] = int(cursor.lastrowid or 0)
        return tag_id

    def _group_rows(self, rows: list[ScalarRow], series: dict[int, list[tuple[np.ndarray, ...]]]) -> None:
        n = len(rows)
        tags = list(map(itemgetter(0), rows))
        for name in set(tags):
            self._tag(name, "scalar")
        ids = np.fromiter(map(self._tag_ids.__getitem__, tags), dtype=np.int64, count=n)
        columns = tuple(
            np.fromiter(map(itemgetter(k), rows), dtype=dtype, count=n)
            for k, dtype in ((1, np.int64), (4, np.float64), (2, np.int64), (3, np.float64))
        )
        if (ids == ids[0]).all():
            series.setdefault(int(ids[0]), []).append(columns)
            return
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ids)) + 1, [len(ids)]))
        for a, b in pairwise(starts):
            part = order[a:b]
            series.setdefault(int(ids[a]), []).append(tuple(column[part] for column in columns))

    def _append_scalars(
        self,
        tag_id: int,
        steps: np.ndarray,
        values: np.ndarray,
        epochs: np.ndarray,
        walls: np.ndarray,
        *,
        pack: bool = False,
    ) -> None:
        """Add points to a tag: full chunks of ``CHUNK`` points, the rest as loose rows; with ``pack`` the rest too
        becomes a (shorter) chunk and no loose row is left."""
        conn, held = self._conn, self._row_counts.get(tag_id, 0)
        if held + len(steps) >= schema.CHUNK or (pack and held + len(steps)):
            if held:  # the oldest points of the tag: fold them into the chunk with the new ones
                old = conn.execute(
                    "SELECT step, value, coalesce(epoch, -1), wall_time FROM scalars WHERE tag_id = ? ORDER BY rowid",
                    (tag_id,),
                ).fetchall()
                conn.execute("DELETE FROM scalars WHERE tag_id = ?", (tag_id,))
                o_steps, o_values, o_epochs, o_walls = zip(*old)
                steps = np.concatenate((np.array(o_steps, dtype=np.int64), steps))
                values = np.concatenate((np.array(o_values, dtype=np.float64), values))
                epochs = np.concatenate((np.array(o_epochs, dtype=np.int64), epochs))
                walls = np.concatenate((np.array(o_walls, dtype=np.float64), walls))
            full = len(steps) if pack else len(steps) // schema.CHUNK * schema.CHUNK
            conn.executemany(
                "INSERT INTO scalar_chunks (tag_id, n, step_min, step_max, steps, vals, epochs, wall_times) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        tag_id,
                        len(steps[a : a + schema.CHUNK]),
                        int(steps[a : a + schema.CHUNK].min()),
                        int(steps[a : a + schema.CHUNK].max()),
                        steps[a : a + schema.CHUNK].astype("<i8").tobytes(),
                        values[a : a + schema.CHUNK].astype("<f8").tobytes(),
                        epochs[a : a + schema.CHUNK].astype("<i8").tobytes(),
                        walls[a : a + schema.CHUNK].astype("<f8").tobytes(),
                    )
                    for a in range(0, full, schema.CHUNK)
                ),
            )
            steps, values, epochs, walls = steps[full:], values[full:], epochs[full:], walls[full:]
            held = 0
        if len(steps):
            conn.executemany(
                "INSERT INTO scalars (tag_id, step, epoch, wall_time, value) VALUES (?, ?, ?, ?, ?)",
                zip(
                    repeat(tag_id),
                    steps.tolist(),
                    [None if e < 0 else e for e in epochs.tolist()],
                    walls.tolist(),
                    values.tolist(),  # NaN becomes NULL, read back as NaN
                ),
            )
        self._row_counts[tag_id] = held + len(steps)

    def _write_item(self, item: Any, series: dict[int, list[tuple[np.ndarray, ...]]], written: list[Path]) -> None:
        conn = self._conn
        if isinstance(item, ScalarBatch):
            tag_id = self._tag(item.tag, "scalar")
            series.setdefault(tag_id, []).append((item.steps, item.values, item.epochs, item.wall_times))
        elif isinstance(item, SetValue):
            table = {"config": "config", "run_info": "run_info"}[item.table]
            if item.value is None:
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (item.key,))
            else:
                conn.execute(f"INSERT OR REPLACE INTO {table} (key, value) VALUES (?, ?)", (item.key, item.value))
        else:
            codec = codec_for(type(item))
            if codec is None:  # pragma: no cover - the Run only queues registered records
                raise TypeError(f"the store cannot write {type(item).__name__}")
            tag_id = self._tag(item.tag, codec.kind)
            step = item.step if codec.stepped else 0
            files = _Files(self.path, f"{schema.FILES_DIR}/{tag_id}/{step}-{uuid.uuid4().hex[:12]}", written)
            self._insert(codec.table, tag_id, codec.encode(item, files))

    def _insert(self, table: str, tag_id: int, stored: Stored) -> None:
        """One encoded record as a row of ``objects`` (its data as JSON) or of its kind's own table (its data as
        columns)."""
        wall = stored.wall_time if stored.wall_time is not None else time.time()
        if table == "objects":
            self._conn.execute(
                "INSERT INTO objects (tag_id, step, wall_time, data, file) VALUES (?, ?, ?, ?, ?)",
                (tag_id, stored.step, wall, json.dumps(stored.data), stored.file),
            )
        else:
            names = ", ".join(stored.data)
            marks = ", ".join("?" * (len(stored.data) + 3))
            self._conn.execute(
                f"INSERT INTO {table} (tag_id, step, wall_time, {names}) VALUES ({marks})",
                (tag_id, stored.step, wall, *stored.data.values()),
            )


class _Files:
    """A record's files beside the database, each written atomically (a temporary name, then a rename), so a
    crash never leaves a half file under the name; ``written`` collects them for removal if the batch fails."""

    def __init__(self, run_dir: Path, base: str, written: list[Path]) -> None:
        self.run_dir, self.base, self.written = run_dir, base, written

    def put(self, suffix: str, content: bytes) -> str:
        relative = self.base + suffix
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)
        self.written.append(path)
        return relative


def _open(run_dir: Path, resume: bool) -> tuple[Any, sqlite3.Connection, StoredState]:
    """Check that ``run_dir`` is new, empty or ours, take its lock, open its database, read what it holds.

    Nothing is written into a directory that is not ours. If a new run cannot be set up, the files made for it
    are removed again.
    """
    db = schema.db_path(run_dir)
    made: list[Path] = []
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{run_dir} is a file, not a run directory; give a directory path for the run")
    if run_dir.is_dir():
        entries = sorted(p.name for p in run_dir.iterdir())
        if db.exists():
            if not resume:
                raise StoreError(
                    f"{run_dir} already holds a run; pass resume=True to add to it, or choose another path"
                )
        elif set(entries) - {schema.LOCK_NAME}:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise StoreError(
                f"{run_dir} is not a deepscope run: it holds {shown} but no {schema.DB_NAME}. Nothing was written "
                "into it; choose a new or empty directory"
            )
    else:
        try:
            run_dir.mkdir(parents=True)
        except OSError as e:
            raise StoreError(f"cannot create the run directory {run_dir}: {e}") from e
        made.append(run_dir)
    created = not db.exists()
    lock_file = None
    try:
        lock_file = _lock(run_dir, made)
        if created:
            made.append(db)
        conn = schema.connect_writable(db, resume=not created)
        try:
            state = _stored_state(conn) if not created else StoredState()
        except BaseException:
            conn.close()
            raise
    except BaseException:
        if lock_file is not None:
            lock_file.close()
        for path in reversed(made):  # only what this call created, newest first
            if path.is_dir():
                for suffix in ("-wal", "-shm"):
                    Path(str(db) + suffix).unlink(missing_ok=True)
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
        raise
    state.created = created
    return lock_file, conn, state


def _lock(run_dir: Path, made: list[Path]) -> Any:
    path = run_dir / schema.LOCK_NAME
    existed = path.exists()
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the run's life: the lock is the open file
    except OSError as e:
        raise StoreError(f"cannot write in {run_dir}: {e}. Choose a writable directory for the run") from e
    if not existed:
        made.append(path)
    if fcntl is None:  # pragma: no cover
        return handle
    deadline = time.monotonic() + 1.0  # readers probe the lock for a moment: wait them out
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise StoreError(
                    f"{run_dir} is being written by another process (pid {holder}); read it with "
                    "deepscope.store.Reader, or log to another path"
                ) from None
            time.sleep(0.05)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _stored_state(conn: sqlite3.Connection) -> StoredState:
    state = StoredState(created=False)
    ids = {}
    for tag_id, name, kind in conn.execute("SELECT id, name, kind FROM tags"):
        state.kinds[name] = kind
        ids[tag_id] = name
    last: dict[int, int] = {}
    for tag_id, blob in conn.execute(
        "SELECT tag_id, steps FROM scalar_chunks WHERE id IN (SELECT max(id) FROM scalar_chunks GROUP BY tag_id)"
    ):
        last[tag_id] = int(np.frombuffer(blob, dtype="<i8")[-1])
    for table, key in (("scalars", "rowid"), ("histograms", "id"), ("objects", "id")):
        query = f"SELECT tag_id, step FROM {table} WHERE {key} IN (SELECT max({key}) FROM {table} GROUP BY tag_id)"
        last.update(conn.execute(query).fetchall())
    state.last_steps = {ids[tag_id]: step for tag_id, step in last.items()}
    state.config = {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM config")}
    return state
