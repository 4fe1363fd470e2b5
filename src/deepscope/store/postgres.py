"""The PostgreSQL backend: many runs in one database that every process and machine of a team can reach.

A run is named (``ds.Run("postgresql://user@host/db", name="fmnist/relu")``); its rows carry its id. The tables are
those of a SQLite run (:mod:`.schema`) with a ``runs`` table above them and a ``files`` table holding what a SQLite
run keeps in ``files/`` (images, sounds, arrays, checkpoints), so a run needs nothing but the database. One writer
per run: it holds a session advisory lock on the run's id, which the server releases when the writer's connection
ends, also when its process dies; readers probe it to tell a running run from an interrupted one. In a distributed
job rank 0 is that writer, and every other rank ``k`` adding its own series (:mod:`.ranks`) holds a lock of its own,
``(RANK_SPACE + k, run id)``.

NaN is a number in PostgreSQL (``double precision``), so it is stored as such, not as ``NULL``. Needs psycopg 3
(``pip install deepscope[postgres]``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import StoreError
from . import schema
from .backend import StoredState, json_pairs, object_row, scalar_columns
from .ranks import mine
from .records import Stored
from .sampling import spread

SCHEMES = ("postgresql://", "postgres://")
LOCK_SPACE = 0x6473  # "ds": the first key of every advisory lock deepscope takes, the run id the second
RANK_SPACE = 0x64720000  # "dr": rank k > 0 of a distributed job locks (RANK_SPACE + k, run id)
CLOSE_SPACE = 0x6474  # (CLOSE_SPACE, run id): held by the batch of a rank that reads and sets the run's status

# Each step takes the database from the version before to its own; applied in one transaction, under a lock, by the
# first writer that finds the database older.
MIGRATIONS: tuple[schema.Migration, ...] = (
    schema.Migration(
        1,
        "first release",
        """
CREATE TABLE deepscope_runs (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE deepscope_run_info (
    run_id BIGINT NOT NULL REFERENCES deepscope_runs(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE deepscope_config (
    run_id BIGINT NOT NULL REFERENCES deepscope_runs(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE deepscope_tags (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES deepscope_runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL, kind TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, UNIQUE (run_id, name)
);
CREATE TABLE deepscope_scalars (
    id BIGSERIAL PRIMARY KEY, tag_id BIGINT NOT NULL REFERENCES deepscope_tags(id) ON DELETE CASCADE,
    step BIGINT NOT NULL, epoch BIGINT, wall_time DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION NOT NULL
);
CREATE INDEX deepscope_scalars_tag ON deepscope_scalars(tag_id, id);
CREATE TABLE deepscope_scalar_chunks (
    id BIGSERIAL PRIMARY KEY, tag_id BIGINT NOT NULL REFERENCES deepscope_tags(id) ON DELETE CASCADE,
    n INTEGER NOT NULL, step_min BIGINT NOT NULL, step_max BIGINT NOT NULL,
    steps BYTEA NOT NULL, vals BYTEA NOT NULL, epochs BYTEA NOT NULL, wall_times BYTEA NOT NULL
);
CREATE INDEX deepscope_scalar_chunks_tag ON deepscope_scalar_chunks(tag_id, step_max);
CREATE TABLE deepscope_histograms (
    id BIGSERIAL PRIMARY KEY, tag_id BIGINT NOT NULL REFERENCES deepscope_tags(id) ON DELETE CASCADE,
    step BIGINT NOT NULL, wall_time DOUBLE PRECISION NOT NULL, low DOUBLE PRECISION, high DOUBLE PRECISION,
    counts BYTEA NOT NULL, counts_dtype TEXT NOT NULL, layer TEXT NOT NULL, kind TEXT NOT NULL,
    mean DOUBLE PRECISION, std DOUBLE PRECISION, zero_fraction DOUBLE PRECISION, norm DOUBLE PRECISION,
    count BIGINT NOT NULL, nonfinite BIGINT NOT NULL
);
CREATE INDEX deepscope_histograms_tag ON deepscope_histograms(tag_id, step);
CREATE TABLE deepscope_objects (
    id BIGSERIAL PRIMARY KEY, tag_id BIGINT NOT NULL REFERENCES deepscope_tags(id) ON DELETE CASCADE,
    step BIGINT NOT NULL, wall_time DOUBLE PRECISION NOT NULL, data TEXT NOT NULL, file TEXT
);
CREATE INDEX deepscope_objects_tag ON deepscope_objects(tag_id, step);
CREATE TABLE deepscope_files (
    run_id BIGINT NOT NULL REFERENCES deepscope_runs(id) ON DELETE CASCADE, path TEXT NOT NULL,
    content BYTEA NOT NULL, PRIMARY KEY (run_id, path)
);
-- the batches each writer (session) committed: after a lost connection, a batch whose commit went through is not
-- written again
CREATE TABLE deepscope_batches (
    run_id BIGINT NOT NULL REFERENCES deepscope_runs(id) ON DELETE CASCADE, session UUID NOT NULL,
    batch BIGINT NOT NULL, PRIMARY KEY (run_id, session, batch)
)
""",
    ),
)
VERSION = MIGRATIONS[-1].version


def is_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a run directory."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def _connect(url: str, **options: Any) -> Any:
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - the extra is not installed
        raise StoreError(
            f"{_shown(url)} is a PostgreSQL store, which needs psycopg 3: pip install 'deepscope[postgres]'"
        ) from e
    try:
        return psycopg.connect(url, **options)
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to {_shown(url)}: {e}") from e


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}{at}{host}" if at else url


def _migrate(conn: Any, url: str) -> None:
    """Bring the database up to :data:`VERSION` (one transaction, serialised between processes by a lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS deepscope_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM deepscope_migrations").fetchone()[0]
        if current > VERSION:
            raise StoreError(
                f"{_shown(url)} has deepscope schema version {current}, newer than this deepscope understands "
                f"({VERSION}): upgrade deepscope to use it"
            )
        for step in MIGRATIONS:
            if step.version > current:
                conn.execute(step.sql)
                conn.execute(
                    "INSERT INTO deepscope_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (step.version, step.name, time.time()),
                )


class _Busy(StoreError):
    """The run's lock is held by another session: another writer, or, while reconnecting, this writer's own old
    session that the server has not yet seen end."""


class PostgresWriter:
    """A named run in a PostgreSQL database, open for writing (:class:`~deepscope.store.backend.WriteBackend`)."""

    def __init__(self, url: str, name: str, resume: bool, rank: int | None = None) -> None:
        """``rank``: ``None`` for a single process, else this process's rank in a distributed job; rank 0 opens the
        run as a single process does, any other joins the run rank 0 holds and adds to its own tags only."""
        if not isinstance(name, str) or not name.strip():
            raise StoreError(f"a run in {_shown(url)} needs a name: ds.Run(url, name='fmnist/relu')")
        self.location = f"run {name!r} in {_shown(url)}"
        self._url, self._session, self._batch, self._rank = url, uuid.uuid4(), 0, rank
        self._conn = _connect(url, autocommit=True)
        try:
            _migrate(self._conn, url)
            self._open(name, resume)
        except BaseException:
            self._conn.close()
            raise
        self._saved: tuple[dict[str, int], dict[int, int]] = ({}, {})
        self._files: list[tuple[str, bytes]] = []

    def _open(self, name: str, resume: bool) -> None:
        conn = self._conn
        with conn.transaction():
            if self._rank:  # joining the run of rank 0, which made it
                row, created = conn.execute("SELECT id FROM deepscope_runs WHERE name = %s", (name,)).fetchone(), False
                if row is None:
                    raise StoreError(f"no {self.location} for rank {self._rank} to join: rank 0 creates it")
            else:
                row = conn.execute(
                    "INSERT INTO deepscope_runs (name, created_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING "
                    "RETURNING id",
                    (name, time.time()),
                ).fetchone()
                created = row is not None
                if not created:
                    if not resume:
                        raise StoreError(
                            f"{self.location} already exists; pass resume=True to add to it, or another name"
                        )
                    row = conn.execute("SELECT id FROM deepscope_runs WHERE name = %s", (name,)).fetchone()
        self.run_id = int(row[0])
        self._lock()
        self.state = StoredState(created=created)
        ids = self._load()
        self.state.kinds = {tag: kind for tag_id, (tag, kind) in ids.items()}
        last: dict[int, int] = {}
        for tag_id, blob in conn.execute(
            "SELECT DISTINCT ON (c.tag_id) c.tag_id, c.steps FROM deepscope_scalar_chunks c "
            "JOIN deepscope_tags t ON t.id = c.tag_id WHERE t.run_id = %s ORDER BY c.tag_id, c.id DESC",
            (self.run_id,),
        ):
            last[tag_id] = int(np.frombuffer(blob, dtype="<i8")[-1])
        for table in ("deepscope_scalars", "deepscope_histograms", "deepscope_objects"):
            last.update(
                conn.execute(
                    f"SELECT DISTINCT ON (x.tag_id) x.tag_id, x.step FROM {table} x "
                    "JOIN deepscope_tags t ON t.id = x.tag_id WHERE t.run_id = %s ORDER BY x.tag_id, x.id DESC",
                    (self.run_id,),
                ).fetchall()
            )
        self.state.last_steps = {ids[tag_id][0]: int(step) for tag_id, step in last.items()}
        self.state.config = {
            key: json.loads(value)
            for key, value in conn.execute("SELECT key, value FROM deepscope_config WHERE run_id = %s", (self.run_id,))
        }

    @property
    def _lock_key(self) -> tuple[int, int]:
        return (RANK_SPACE + self._rank if self._rank else LOCK_SPACE), self.run_id

    def _lock(self) -> None:
        deadline = time.monotonic() + 1.0  # readers probe the lock for a moment: wait them out
        while not self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._lock_key).fetchone()[0]:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if self._rank:
                raise _Busy(f"rank {self._rank} of {self.location} is already written by another process")
            raise _Busy(
                f"{self.location} is being written by another process; read it with deepscope.store.Reader, or log "
                "to another name"
            )
        self._locked = True

    def _load(self) -> dict[int, tuple[str, str]]:
        """Read the run's tags and how many loose points each scalar tag holds; returns id -> (name, kind)."""
        conn = self._conn
        ids = {
            int(tag_id): (tag, kind)
            for tag_id, tag, kind in conn.execute(
                "SELECT id, name, kind FROM deepscope_tags WHERE run_id = %s", (self.run_id,)
            )
        }
        self._tag_ids = {tag: tag_id for tag_id, (tag, _) in ids.items()}
        self._row_counts: dict[int, int] = {  # only its own: the loose points closing packs
            tag_id: n
            for tag_id, n in conn.execute(
                "SELECT s.tag_id, count(*) FROM deepscope_scalars s JOIN deepscope_tags t ON t.id = s.tag_id "
                "WHERE t.run_id = %s GROUP BY s.tag_id",
                (self.run_id,),
            )
            if mine(ids[tag_id][0], self._rank)
        }
        return ids

    # ---- one batch ------------------------------------------------------------------------------------------------

    def begin(self, batch: int) -> None:
        self._saved = (dict(self._tag_ids), dict(self._row_counts))
        self._files = []
        self._batch = batch
        self._conn.execute("BEGIN")

    def commit(self) -> None:
        if self._files:
            with self._conn.cursor().copy("COPY deepscope_files (run_id, path, content) FROM STDIN") as copy:
                for path, content in self._files:
                    copy.write_row((self.run_id, path, content))
        self._conn.execute(
            "INSERT INTO deepscope_batches (run_id, session, batch) VALUES (%s, %s, %s)",
            (self.run_id, self._session, self._batch),
        )
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        import psycopg

        if not self._conn.broken and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._conn.execute("ROLLBACK")
        self._tag_ids, self._row_counts = self._saved
        self._files = []

    def transient(self, error: BaseException) -> bool:
        import psycopg

        if isinstance(error, _Busy):  # while reconnecting: the old session may linger until the server sees it end
            return True
        if isinstance(error, StoreError):  # no new connection (the server is still down)
            return isinstance(error.__cause__, psycopg.OperationalError) and "cannot connect" in str(error)
        return isinstance(error, psycopg.OperationalError) and (self._conn.broken or self._conn.closed)

    def recover(self, batch: int) -> bool:
        """A new connection, the run's lock taken again (raises if another writer took it meanwhile), the tags and
        loose points read again; whether ``batch`` is among those committed."""
        conn = _connect(self._url, autocommit=True)
        try:
            old, self._conn = self._conn, conn
            old.close()
            self._lock()
            self._load()
            done = conn.execute(
                "SELECT 1 FROM deepscope_batches WHERE run_id = %s AND session = %s AND batch = %s",
                (self.run_id, self._session, batch),
            ).fetchone()
        except BaseException:
            conn.close()
            raise
        return done is not None

    def tag(self, name: str, kind: str) -> int:
        tag_id = self._tag_ids.get(name)
        if tag_id is None:
            tag_id = self._tag_ids[name] = int(
                self._conn.execute(
                    "INSERT INTO deepscope_tags (run_id, name, kind, created_at) VALUES (%s, %s, %s, %s) RETURNING id",
                    (self.run_id, name, kind, time.time()),
                ).fetchone()[0]
            )
        return tag_id

    def append_scalars(
        self, tag_id: int, steps: np.ndarray, values: np.ndarray, epochs: np.ndarray, walls: np.ndarray, *, pack: bool
    ) -> None:
        """As the SQLite backend: full chunks of ``CHUNK`` points, the rest as rows (written by ``COPY``)."""
        conn, held = self._conn, self._row_counts.get(tag_id, 0)
        chunk = schema.CHUNK
        if held + len(steps) >= chunk or (pack and held + len(steps)):
            if held:
                old = conn.execute(
                    "DELETE FROM deepscope_scalars WHERE tag_id = %s RETURNING id, step, value, coalesce(epoch, -1), "
                    "wall_time",
                    (tag_id,),
                ).fetchall()
                old.sort()
                _, o_steps, o_values, o_epochs, o_walls = zip(*old)
                steps = np.concatenate((np.array(o_steps, dtype=np.int64), steps))
                values = np.concatenate((np.array(o_values, dtype=np.float64), values))
                epochs = np.concatenate((np.array(o_epochs, dtype=np.int64), epochs))
                walls = np.concatenate((np.array(o_walls, dtype=np.float64), walls))
            full = len(steps) if pack else len(steps) // chunk * chunk
            with conn.cursor().copy(
                "COPY deepscope_scalar_chunks (tag_id, n, step_min, step_max, steps, vals, epochs, wall_times) "
                "FROM STDIN"
            ) as copy:
                for a in range(0, full, chunk):
                    part = slice(a, min(a + chunk, full))
                    copy.write_row(
                        (
                            tag_id,
                            part.stop - part.start,
                            int(steps[part].min()),
                            int(steps[part].max()),
                            steps[part].astype("<i8").tobytes(),
                            values[part].astype("<f8").tobytes(),
                            epochs[part].astype("<i8").tobytes(),
                            walls[part].astype("<f8").tobytes(),
                        )
                    )
            steps, values, epochs, walls = steps[full:], values[full:], epochs[full:], walls[full:]
            held = 0
        if len(steps):
            with conn.cursor().copy(
                "COPY deepscope_scalars (tag_id, step, epoch, wall_time, value) FROM STDIN"
            ) as copy:
                for row in zip(
                    [tag_id] * len(steps),
                    steps.tolist(),
                    [None if e < 0 else e for e in epochs.tolist()],
                    walls.tolist(),
                    values.tolist(),
                ):
                    copy.write_row(row)
        self._row_counts[tag_id] = held + len(steps)

    def unpacked(self) -> list[int]:
        return [tag_id for tag_id, held in self._row_counts.items() if held]

    def put(self, table: str, tag_id: int, stored: Stored) -> None:
        wall = stored.wall_time if stored.wall_time is not None else time.time()
        if table == "objects":
            self._conn.execute(
                "INSERT INTO deepscope_objects (tag_id, step, wall_time, data, file) VALUES (%s, %s, %s, %s, %s)",
                (tag_id, stored.step, wall, json.dumps(stored.data), stored.file),
            )
        else:
            names = ", ".join(stored.data)
            marks = ", ".join(["%s"] * (len(stored.data) + 3))
            self._conn.execute(
                f"INSERT INTO deepscope_{table} (tag_id, step, wall_time, {names}) VALUES ({marks})",
                (tag_id, stored.step, wall, *stored.data.values()),
            )

    def set_value(self, table: str, key: str, value: str | None) -> None:
        table = {"config": "deepscope_config", "run_info": "deepscope_run_info"}[table]
        if value is None:
            self._conn.execute(f"DELETE FROM {table} WHERE run_id = %s AND key = %s", (self.run_id, key))
        else:
            self._conn.execute(
                f"INSERT INTO {table} (run_id, key, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                (self.run_id, key, value),
            )

    def files(self, tag_id: int, step: int) -> _FileBuffer:
        return _FileBuffer(f"{schema.FILES_DIR}/{tag_id}/{step}-{uuid.uuid4().hex[:12]}", self._files)

    def put_file(self, relative: str, content: bytes) -> None:
        """Add a file under a path of its own (a copied run keeps its files' paths), with the batch."""
        self._files.append((relative, content))

    def info_value(self, key: str) -> Any:
        """One key of the run's info as stored now, or ``None``."""
        row = self._conn.execute(
            "SELECT value FROM deepscope_run_info WHERE run_id = %s AND key = %s", (self.run_id, key)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def exclusive(self) -> None:
        # Released when the batch's transaction ends; each later statement (READ COMMITTED) sees what the rank that
        # held it before committed.
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (CLOSE_SPACE, self.run_id))

    def close(self) -> None:
        self._conn.close()  # ends the session: the server releases the run's lock

    def unlock(self) -> None:
        if self._locked and not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._lock_key)
        self._locked = False


class _FileBuffer:
    """A record's files, kept until the batch commits, then copied into ``deepscope_files`` with its rows."""

    def __init__(self, base: str, pending: list[tuple[str, bytes]]) -> None:
        self.base, self.pending = base, pending

    def put(self, suffix: str, content: bytes) -> str:
        self.pending.append((self.base + suffix, content))
        return self.base + suffix


class PostgresReader:
    """A named run in a PostgreSQL database, read-only (:class:`~deepscope.store.backend.ReadBackend`).

    With ``database``, the run is read over that :class:`Database`'s one connection (a board serving many runs opens
    no connection per request); else over a connection of its own, closed with the reader.
    """

    def __init__(self, url: str, name: str | None, database: Database | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise StoreError(f"name the run to read in {_shown(url)}: Reader(url, name='fmnist/relu')")
        self.location = f"run {name!r} in {_shown(url)}"
        self._database = database if database is not None else Database(url)
        self._own = database is None
        try:
            with self._reading() as conn:
                found = None
                if conn.execute("SELECT to_regclass('deepscope_runs') IS NOT NULL").fetchone()[0]:
                    found = conn.execute("SELECT id FROM deepscope_runs WHERE name = %s", (name,)).fetchone()
        except BaseException:
            self.close()
            raise
        if not found:
            self.close()
            raise StoreError(f"no deepscope run named {name!r} in {_shown(url)}")
        self.run_id = int(found[0])
        self.files = _StoredFiles(self)

    def info(self) -> dict[str, Any]:
        return self._pairs("deepscope_run_info")

    def config(self) -> dict[str, Any]:
        return self._pairs("deepscope_config")

    def _pairs(self, table: str) -> dict[str, Any]:
        with self._reading() as conn:
            rows = conn.execute(f"SELECT key, value FROM {table} WHERE run_id = %s", (self.run_id,)).fetchall()
        return json_pairs(rows, table.removeprefix("deepscope_"), self.location)

    def tags(self) -> dict[str, str]:
        with self._reading() as conn:
            rows = conn.execute(
                'SELECT name, kind FROM deepscope_tags WHERE run_id = %s ORDER BY name COLLATE "C"', (self.run_id,)
            ).fetchall()
        return dict(rows)

    def tag(self, name: str) -> tuple[int, str] | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT id, kind FROM deepscope_tags WHERE run_id = %s AND name = %s", (self.run_id, name)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def scalars(
        self, tag_id: int, start: int | None, end: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        where, bounds = "", []
        if start is not None:
            where += " AND step_max >= %s"
            bounds.append(int(start))
        if end is not None:
            where += " AND step_min <= %s"
            bounds.append(int(end))
        # Results in PostgreSQL's binary format (binary=True): a chunk's bytes as they are, where the text format
        # sends them as hex and decodes them here (5x slower for 100,000 points).
        with self._reading() as conn, conn.transaction():  # chunks and rows from one snapshot
            chunks = conn.execute(
                "SELECT steps, vals, epochs, wall_times FROM deepscope_scalar_chunks "
                f"WHERE tag_id = %s{where} ORDER BY id",
                (tag_id, *bounds),
                binary=True,
            ).fetchall()
            rows = conn.execute(
                "SELECT step, value, coalesce(epoch, -1), wall_time FROM deepscope_scalars WHERE tag_id = %s "
                "ORDER BY id",
                (tag_id,),
                binary=True,
            ).fetchall()
        return scalar_columns(chunks, rows, self.location)

    def records(
        self, table: str, tag_id: int, start: int | None, end: int | None, max_records: int | None
    ) -> list[Stored]:
        where, bounds = _where(tag_id, start, end)
        with self._reading() as conn, conn.transaction():
            if max_records is not None:
                ids = [row[0] for row in conn.execute(f"SELECT id FROM deepscope_{table} WHERE {where}", bounds)]
                if len(ids) > max_records:
                    ids.sort()
                    where, bounds = "id = ANY(%s)", [[ids[i] for i in spread(len(ids), max_records).tolist()]]
            cursor = conn.execute(f"SELECT * FROM deepscope_{table} WHERE {where} ORDER BY id", bounds, binary=True)
            names = [d.name for d in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        if table == "objects":
            return [object_row(row["step"], row["wall_time"], row["data"], row["file"]) for row in rows]
        own = [name for name in names if name not in ("id", "tag_id", "step", "wall_time")]
        return [Stored(row["step"], row["wall_time"], {name: _plain(row[name]) for name in own}) for row in rows]

    def count(self, table: str, tag_id: int, start: int | None, end: int | None) -> int:
        where, bounds = _where(tag_id, start, end)
        with self._reading() as conn:
            found = conn.execute(f"SELECT count(*) FROM deepscope_{table} WHERE {where}", bounds).fetchone()
        return int(found[0])

    def read(self, relative: str) -> bytes:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT content FROM deepscope_files WHERE run_id = %s AND path = %s",
                (self.run_id, relative),
                binary=True,
            ).fetchone()
        if row is None:
            raise FileNotFoundError(f"no file {relative!r}")
        return bytes(row[0])

    def writer_alive(self) -> bool:
        with self._reading() as conn:
            return _writer_alive(conn, self.run_id)

    def stamp(self) -> tuple[Any, ...] | None:
        with self._reading() as conn:
            return _stamps(conn, [self.run_id]).get(self.run_id)

    def live_stamp(self) -> tuple[Any, ...]:
        with self._reading() as conn:
            return _stamps(conn, [self.run_id], live=True)[self.run_id]  # type: ignore[return-value]

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._database.connection(self.location) as conn:
            yield conn

    def close(self) -> None:
        if self._own:
            self._database.close()


class _StoredFiles:
    """The files of a run in ``deepscope_files``, as decoders read them."""

    def __init__(self, reader: PostgresReader) -> None:
        self.reader = reader

    def read(self, relative: str) -> bytes:
        return self.reader.read(relative)

    def where(self, relative: str) -> str:
        return f"{relative} of {self.reader.location}"


def _ranks_held(conn: Any, run_ids: list[int]) -> set[int]:
    """Which of the runs some rank k > 0 of a distributed job holds now (its lock, in ``pg_locks``: a two-key advisory
    lock has objsubid 2, its keys in classid and objid), whoever holds the run's own lock."""
    if not run_ids:
        return set()
    held = conn.execute(
        "SELECT DISTINCT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid::bigint > %s AND classid::bigint < %s AND objid::bigint = ANY(%s)",
        (RANK_SPACE, RANK_SPACE + 0x10000, run_ids),
    ).fetchall()
    return {int(run_id) for (run_id,) in held}


def _plain(value: Any) -> Any:
    """``bytea`` columns come back as ``memoryview``: as ``bytes``, like SQLite's blobs."""
    return bytes(value) if isinstance(value, memoryview) else value


def _where(tag_id: int, start: int | None, end: int | None) -> tuple[str, list[Any]]:
    where, bounds = "tag_id = %s", list[Any]([tag_id])
    if start is not None:
        where += " AND step >= %s"
        bounds.append(int(start))
    if end is not None:
        where += " AND step <= %s"
        bounds.append(int(end))
    return where, bounds


class Database:
    """One PostgreSQL database to read from, over one connection made when first needed (and again after the
    server dropped it); calls from several threads take turns on it.

    What a board serving the database holds: its listing of runs, the change tokens of many runs in one query, and
    the readers of single runs (:meth:`reader`) share the connection.
    """

    # A connection idle this long is checked (one round trip) before it is used: the server may have been restarted
    # meanwhile, and a board should not answer one request with an error for it.
    CHECK_AFTER_S = 1.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = threading.Lock()
        self._used = 0.0

    @property
    def shown(self) -> str:
        """The URL without its password, for messages."""
        return _shown(self.url)

    @contextmanager
    def connection(self, location: str | None = None) -> Iterator[Any]:
        """The connection, held by this thread until the block ends; a failure to read as ``StoreError``."""
        import psycopg

        with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed and time.monotonic() - self._used > self.CHECK_AFTER_S:
                try:
                    conn.execute("SELECT 1")
                except psycopg.OperationalError:
                    conn.close()
            if conn is None or conn.closed or conn.broken:
                conn = self._conn = _connect(self.url, autocommit=True)
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # a query over tables: one snapshot
            try:
                yield conn
            except psycopg.Error as e:
                raise StoreError(f"{location or self.shown} cannot be read ({e})") from e
            finally:
                self._used = time.monotonic()

    def reader(self, name: str) -> PostgresReader:
        """The run ``name``, read over this database's connection."""
        return PostgresReader(self.url, name, self)

    def list_runs(self) -> list[tuple[str, str, float, dict[str, str]]]:
        """Every run in the database: ``(name, status, created_at, tags)``, sorted by name; ``status`` as
        :meth:`deepscope.store.Reader.info` says it (``"interrupted"`` for a run that says running but has no
        writer)."""
        with self.connection() as conn:
            if not conn.execute("SELECT to_regclass('deepscope_runs') IS NOT NULL").fetchone()[0]:
                return []
            with conn.transaction():  # runs and tags from one snapshot
                runs = conn.execute(
                    "SELECT r.id, r.name, r.created_at, i.value FROM deepscope_runs r "
                    "LEFT JOIN deepscope_run_info i ON i.run_id = r.id AND i.key = 'status' "
                    'ORDER BY r.name COLLATE "C"'
                ).fetchall()
                tags: dict[int, dict[str, str]] = {}
                for run_id, tag, kind in conn.execute(
                    'SELECT run_id, name, kind FROM deepscope_tags ORDER BY name COLLATE "C"'
                ):
                    tags.setdefault(run_id, {})[tag] = kind
            said = {run_id: json.loads(status) if status is not None else "unknown" for run_id, _, _, status in runs}
            alive = _writers_alive(conn, [run_id for run_id, status in said.items() if status == "running"])
        listed = []
        for run_id, name, created_at, _ in runs:
            status = said[run_id]
            if status == "running" and run_id not in alive:
                status = "interrupted"
            listed.append((name, status, created_at, tags.get(run_id, {})))
        return listed

    def stamps(self, names: list[str]) -> dict[str, tuple[Any, ...] | None]:
        """The change token of each named run there is (:meth:`PostgresReader.stamp`), in one query."""
        with self.connection() as conn:
            if not conn.execute("SELECT to_regclass('deepscope_runs') IS NOT NULL").fetchone()[0]:
                return {}
            ids = dict(conn.execute("SELECT name, id FROM deepscope_runs WHERE name = ANY(%s)", (names,)).fetchall())
            stamped = _stamps(conn, list(ids.values()))
        return {name: stamped.get(run_id) for name, run_id in ids.items()}

    def live_stamps(self, names: list[str]) -> dict[str, tuple[Any, ...]]:
        """Each named run's token that changes with every commit, written or not (:meth:`PostgresReader.live_stamp`),
        in one query."""
        with self.connection() as conn:
            if not conn.execute("SELECT to_regclass('deepscope_runs') IS NOT NULL").fetchone()[0]:
                return {}
            ids = dict(conn.execute("SELECT name, id FROM deepscope_runs WHERE name = ANY(%s)", (names,)).fetchall())
            stamped = _stamps(conn, list(ids.values()), live=True)
        return {name: stamped[run_id] for name, run_id in ids.items()}  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _writers_alive(conn: Any, run_ids: list[int]) -> set[int]:
    """Which of the runs a writer holds now: their locks probed (taken shared and let go at once)."""
    if not run_ids:
        return set()
    free = conn.execute(
        "SELECT id, pg_try_advisory_lock_shared(%s, id::integer) FROM unnest(%s::bigint[]) AS id",
        (LOCK_SPACE, run_ids),
    ).fetchall()
    taken = [run_id for run_id, took in free if took]
    if taken:
        conn.execute(
            "SELECT pg_advisory_unlock_shared(%s, id::integer) FROM unnest(%s::bigint[]) AS id", (LOCK_SPACE, taken)
        ).fetchall()
    alive = {int(run_id) for run_id, took in free if not took}
    # A distributed run whose rank 0 has closed is still written while another rank holds its own lock.
    return alive | _ranks_held(conn, [run_id for run_id in run_ids if run_id not in alive])


def _writer_alive(conn: Any, run_id: int) -> bool:
    return run_id in _writers_alive(conn, [run_id])


def _stamps(conn: Any, run_ids: list[int], live: bool = False) -> dict[int, tuple[Any, ...] | None]:
    """Per run a token that changes whenever its data does, ``None`` while a writer holds it (it may change any
    time); with ``live``, given for those too (what changes with each commit, see ``live_stamp``). Every write
    commits as a batch that leaves a row in ``deepscope_batches`` (also a synced copy), and no row is removed but
    with the run: the run's id and the number of its batches name its contents."""
    if not run_ids:
        return {}
    alive = set() if live else _writers_alive(conn, run_ids)
    counted = dict(
        conn.execute(
            "SELECT id, (SELECT count(*) FROM deepscope_batches b WHERE b.run_id = id) FROM unnest(%s::bigint[]) AS id",
            (run_ids,),
        ).fetchall()
    )
    return {run_id: None if run_id in alive else (run_id, int(counted[run_id])) for run_id in run_ids}


def list_runs(url: str) -> list[tuple[str, str, float, dict[str, str]]]:
    """Every run in the database (:meth:`Database.list_runs`), over a connection of its own."""
    database = Database(url)
    try:
        return database.list_runs()
    finally:
        database.close()
