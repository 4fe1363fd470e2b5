"""The embedded backend: a run is a directory holding one SQLite database and its files (:mod:`.schema`).

:class:`SQLiteWriter` is what :class:`~deepscope.store.writer.Writer` writes through: the directory checked and
locked (one writing process per run), each batch one SQLite transaction, scalars moved from loose rows into packed
chunks. In a distributed job each rank is such a writer, rank 0 owning the run and every other rank adding its own
series (:mod:`.ranks`), their transactions serialised by SQLite (WAL: readers never wait). :class:`SQLiteReader` is
what :class:`~deepscope.store.reader.Reader` reads through: a read-only
connection that sees each commit of a live writer, one read transaction per query that spans tables.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from . import schema
from .backend import StoredState, json_pairs, object_row, scalar_columns
from .ranks import mine
from .records import Stored
from .sampling import spread

try:  # POSIX: one writing process per run, enforced by an advisory lock released even on SIGKILL
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock; SQLite still serialises the writes
    fcntl = None  # type: ignore[assignment]


class SQLiteWriter:
    """A run directory open for writing (:class:`~deepscope.store.backend.WriteBackend`)."""

    def __init__(self, run_dir: Path, resume: bool, rank: int | None = None) -> None:
        """``rank``: ``None`` for a single process, else this process's rank in a distributed job; rank 0 opens the
        run as a single process does, any other joins the run rank 0 holds and adds to its own tags only."""
        self.path = run_dir
        self.db = schema.db_path(run_dir)
        self.location = str(self.db)
        self._lock_file, self._conn, self.state = _join(run_dir, rank) if rank else _open(run_dir, resume)
        try:
            self._tag_ids: dict[str, int] = dict(self._conn.execute("SELECT name, id FROM tags").fetchall())
            mine_ids = {tag_id for name, tag_id in self._tag_ids.items() if mine(name, rank)}
            self._row_counts: dict[int, int] = {  # only its own: the loose points closing packs
                tag_id: n
                for tag_id, n in self._conn.execute("SELECT tag_id, count(*) FROM scalars GROUP BY tag_id")
                if tag_id in mine_ids
            }
        except sqlite3.Error as e:
            self.close()
            self.unlock()
            raise StoreError(f"cannot write to {self.db} ({e})") from e
        self._saved: tuple[dict[str, int], dict[int, int]] = ({}, {})
        self._written: list[Path] = []

    # ---- one batch ------------------------------------------------------------------------------------------------

    def begin(self, batch: int) -> None:
        self._saved = (dict(self._tag_ids), dict(self._row_counts))
        self._written = []
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._tag_ids, self._row_counts = self._saved
        for path in self._written:  # files of rows that were not committed
            path.unlink(missing_ok=True)

    def transient(self, error: BaseException) -> bool:
        # A local file: a failure (disk full, file removed) does not go away by waiting; another rank's transaction
        # holding the database longer than busy_timeout does.
        return isinstance(error, sqlite3.OperationalError) and getattr(error, "sqlite_errorcode", None) in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        )

    def recover(self, batch: int) -> bool:
        return False  # the batch was rolled back: write it again

    def tag(self, name: str, kind: str) -> int:
        tag_id = self._tag_ids.get(name)
        if tag_id is None:
            cursor = self._conn.execute(
                "INSERT INTO tags (name, kind, created_at) VALUES (?, ?, ?)", (name, kind, time.time())
            )
            tag_id = self._tag_ids[name] = int(cursor.lastrowid or 0)
        return tag_id

    def append_scalars(
        self, tag_id: int, steps: np.ndarray, values: np.ndarray, epochs: np.ndarray, walls: np.ndarray, *, pack: bool
    ) -> None:
        """Full chunks of ``CHUNK`` points, the rest as loose rows; with ``pack`` the rest too becomes a (shorter)
        chunk and no loose row is left."""
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

    def unpacked(self) -> list[int]:
        return [tag_id for tag_id, held in self._row_counts.items() if held]

    def put(self, table: str, tag_id: int, stored: Stored) -> None:
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

    def set_value(self, table: str, key: str, value: str | None) -> None:
        table = {"config": "config", "run_info": "run_info"}[table]
        if value is None:
            self._conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
        else:
            self._conn.execute(f"INSERT OR REPLACE INTO {table} (key, value) VALUES (?, ?)", (key, value))

    def info_value(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM run_info WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def exclusive(self) -> None:
        pass  # every batch is BEGIN IMMEDIATE: no other writer of the file gets in before it commits

    def files(self, tag_id: int, step: int) -> RunFiles:
        import uuid

        base = f"{schema.FILES_DIR}/{tag_id}/{step}-{uuid.uuid4().hex[:12]}"
        return RunFiles(self.path, base, self._written)

    # ---- the end --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        # A closed run is one self-contained file. Every commit is first copied from the WAL into run.db and the WAL
        # emptied, also while a reader has the run open (a board's request at that moment: only the last connection
        # to close would fold the WAL back, and a read-only one cannot, so run.db alone would hold nothing); then
        # back to a rollback journal (possible only when no reader has it open; otherwise it stays in WAL mode, with
        # an empty WAL, which is as good).
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None


class RunFiles:
    """A run directory's files: where encoders put a record's files (each written atomically, a temporary name
    then a rename, so a crash never leaves a half file under the name; ``written`` collects them for removal if
    the batch fails) and where decoders read them."""

    def __init__(self, run_dir: Path, base: str = "", written: list[Path] | None = None) -> None:
        self.run_dir, self.base, self.written = run_dir, base, written

    def put(self, suffix: str, content: bytes) -> str:
        relative = self.base + suffix
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)
        if self.written is not None:
            self.written.append(path)
        return relative

    def read(self, relative: str) -> bytes:
        return self.locate(relative).read_bytes()

    def locate(self, relative: str) -> Path:
        """Where a file of the run is, by its real path: inside the run directory's own ``files/`` folder (not a
        symlink out of it, nor a ``files/`` that is itself a symlink); ``PermissionError`` for anything else."""
        run_dir = self.run_dir.resolve()
        found = (run_dir / relative).resolve()
        if not found.is_relative_to(run_dir / schema.FILES_DIR):
            raise PermissionError(f"{relative!r} leads outside the run's {schema.FILES_DIR}/ folder")
        return found

    def where(self, relative: str) -> str:
        return str(self.run_dir / relative)


class SQLiteReader:
    """A run directory, read-only (:class:`~deepscope.store.backend.ReadBackend`); calls are serialised, so one
    may be shared between threads."""

    def __init__(self, path: Path) -> None:
        self.db = path if path.name == schema.DB_NAME and path.is_file() else schema.db_path(path)
        self.path = self.db.parent
        self.location = str(self.db)
        if not self.db.is_file():
            raise StoreError(f"no deepscope run at {path}: there is no {self.db}")
        self.files = RunFiles(self.path)
        self._conn = schema.connect_readonly(self.db)
        self._lock = threading.Lock()
        try:
            current = schema.version(self._conn, self.db)
        except BaseException:
            self._conn.close()
            raise
        if current != schema.SCHEMA_VERSION:
            self._conn.close()
            if current == 0:
                raise StoreError(f"{self.db} is empty: its run stopped before writing anything")
            raise StoreError(
                f"{self.db} has schema version {current}; this deepscope reads version {schema.SCHEMA_VERSION}. "
                "Open it once with deepscope.Run(path, resume=True) to bring it up to date"
            )

    def info(self) -> dict[str, Any]:
        with self._reading():
            rows = self._conn.execute("SELECT key, value FROM run_info").fetchall()
        return json_pairs(rows, "run_info", self.location)

    def config(self) -> dict[str, Any]:
        with self._reading():
            rows = self._conn.execute("SELECT key, value FROM config").fetchall()
        return json_pairs(rows, "config", self.location)

    def tags(self) -> dict[str, str]:
        with self._reading():
            return dict(self._conn.execute("SELECT name, kind FROM tags ORDER BY name").fetchall())

    def tag(self, name: str) -> tuple[int, str] | None:
        with self._reading():
            row = self._conn.execute("SELECT id, kind FROM tags WHERE name = ?", (name,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def scalars(
        self, tag_id: int, start: int | None, end: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The chunks that may hold steps in range (by their step bounds), then every loose row."""
        where, bounds = "", []
        if start is not None:
            where += " AND step_max >= ?"
            bounds.append(int(start))
        if end is not None:
            where += " AND step_min <= ?"
            bounds.append(int(end))
        with self._reading():
            self._conn.execute("BEGIN")  # chunks and rows from one snapshot: the writer moves rows into chunks
            try:
                chunks = self._conn.execute(
                    f"SELECT steps, vals, epochs, wall_times FROM scalar_chunks WHERE tag_id = ?{where} ORDER BY id",
                    (tag_id, *bounds),
                ).fetchall()
                rows = self._conn.execute(
                    "SELECT step, value, coalesce(epoch, -1), wall_time FROM scalars WHERE tag_id = ? ORDER BY rowid",
                    (tag_id,),
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        return scalar_columns(chunks, rows, self.location)

    def records(
        self, table: str, tag_id: int, start: int | None, end: int | None, max_records: int | None
    ) -> list[Stored]:
        where, bounds = _where(tag_id, start, end)
        query = f"SELECT * FROM {table} WHERE {where} ORDER BY id"
        with self._reading():
            if max_records is not None:  # choose among the ids alone, then read only the chosen rows
                ids = [row[0] for row in self._conn.execute(f"SELECT id FROM {table} WHERE {where}", bounds)]
                if len(ids) > max_records:
                    ids.sort()
                    chosen = [ids[i] for i in spread(len(ids), max_records).tolist()]
                    query = f"SELECT * FROM {table} WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
                    bounds = [json.dumps(chosen)]
            cursor = self._conn.execute(query, bounds)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        if table == "objects":
            return [object_row(row["step"], row["wall_time"], row["data"], row["file"]) for row in rows]
        own = [name for name in names if name not in ("id", "tag_id", "step", "wall_time")]
        return [Stored(row["step"], row["wall_time"], {name: row[name] for name in own}) for row in rows]

    def count(self, table: str, tag_id: int, start: int | None, end: int | None) -> int:
        where, bounds = _where(tag_id, start, end)
        with self._reading():
            return int(self._conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", bounds).fetchone()[0])

    def writer_alive(self) -> bool:
        return writer_alive(self.path)

    def stamp(self) -> tuple[Any, ...] | None:
        return stamp(self.path)

    def live_stamp(self) -> tuple[Any, ...]:
        return live_stamp(self.path)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.db} cannot be read ({e}); it was left untouched") from e

    def close(self) -> None:
        self._conn.close()


def _where(tag_id: int, start: int | None, end: int | None) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause, with its arguments, that selects a tag's records in a step range."""
    where, bounds = "tag_id = ?", list[Any]([tag_id])
    if start is not None:
        where += " AND step >= ?"
        bounds.append(int(start))
    if end is not None:
        where += " AND step <= ?"
        bounds.append(int(end))
    return where, bounds


def writer_alive(run_dir: Path, names: list[str] | None = None) -> bool:
    """Whether some process holds the run's writer lock, or a rank's, right now (without taking either for more
    than a moment). ``names``: the directory's entries, when the caller listed them already."""
    if fcntl is None:  # pragma: no cover - without locks, trust the stored status
        return True
    if names is None:
        try:
            names = os.listdir(run_dir)
        except OSError:
            return False
    if schema.LOCK_NAME not in names:
        return False
    locks = [schema.LOCK_NAME, *fnmatch.filter(names, schema.RANK_LOCKS)]
    return any(_held(run_dir / lock) for lock in locks)


def _held(path: Path) -> bool:
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def stamp(run_dir: Path, names: list[str] | None = None) -> tuple[int, ...] | None:
    """The change token of a run directory (:meth:`SQLiteReader.stamp`) without opening it: the identity, size and
    modification time of ``run.db`` and of its WAL, which holds commits not yet copied into ``run.db``; ``None``
    while a writer holds the run. ``names``: the directory's entries, when the caller listed them already.

    One listing of the directory, then a ``stat`` per file that is there (a board stamps every run on every poll).
    """
    if names is None:
        try:
            names = os.listdir(run_dir)
        except OSError:
            names = []
    if writer_alive(run_dir, names):
        return None
    return live_stamp(run_dir, names)


def live_stamp(run_dir: Path, names: list[str] | None = None) -> tuple[int, ...]:
    """What changes whenever a commit lands in the run, written or not (:meth:`SQLiteReader.live_stamp`): the
    identity, size and modification time of ``run.db`` and of its WAL (``-1`` for a file that is not there).

    Unlike :func:`stamp` it is given while a writer holds the run: it says that something changed (a live page
    refetches), not that a read may be kept (a commit may land between two ``stat`` calls and a read)."""
    stamped: list[int] = []
    for name in (schema.DB_NAME, schema.DB_NAME + "-wal"):
        try:
            info = os.stat(run_dir / name) if names is None or name in names else None
        except FileNotFoundError:  # removed since the listing
            info = None
        stamped += [-1, -1, -1] if info is None else [info.st_ino, info.st_size, info.st_mtime_ns]
    return tuple(stamped)


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


def _join(run_dir: Path, rank: int) -> tuple[Any, sqlite3.Connection, StoredState]:
    """Open the run rank 0 holds as the writer of ``rank``'s own series: that rank's lock, the database (which rank 0
    created, checked and brought up to date), what it holds."""
    db = schema.db_path(run_dir)
    if not db.is_file():
        raise StoreError(f"no deepscope run at {run_dir} for rank {rank} to join: rank 0 creates it")
    lock_file = _lock(run_dir, [], rank)
    try:
        conn = schema.connect_writable(db, resume=False)  # resume=False: no second quick_check of a live run
        try:
            state = _stored_state(conn)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        lock_file.close()
        raise
    return lock_file, conn, state


def _lock(run_dir: Path, made: list[Path], rank: int | None = None) -> Any:
    """The run's writer lock, or with ``rank`` that rank's own (one process per rank), held by this process."""
    path = run_dir / (schema.LOCK_NAME if not rank else schema.RANK_LOCKS.replace("*", str(rank)))
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
                if rank:
                    raise StoreError(f"rank {rank} of {run_dir} is already written by process {holder}") from None
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
