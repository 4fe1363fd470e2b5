"""The layout of a run's database: tables, schema version, migrations, and opening a file safely.

A run is a directory ``<root>/<name>/`` holding ``run.db`` (SQLite, WAL mode), ``run.lock`` (held by the one
process writing it; in a distributed job rank 0, while every other rank ``k`` writing its own series holds
``run.rank<k>.lock``) and ``files/`` (large arrays and images, referenced from the database by relative path).

Scalars live in two tables. New points go to ``scalars`` (one row each); once a tag has ``CHUNK`` of them the
writer moves them, oldest first, into one row of ``scalar_chunks`` holding four packed little-endian arrays
(steps int64, values float64, epochs int64 with -1 for none, wall times float64). When the run closes, each
tag's remaining rows become one last chunk of ``n < CHUNK`` points, so a finished run reads from blobs alone. Each
point is thus written at most twice, and reading a million points decodes a few hundred blobs instead of building
a million rows. The points of a tag, in the order logged, are its chunks by ``id`` followed by its rows by
``rowid``.

SQLite stores a NaN ``REAL`` as ``NULL``; every ``REAL`` column here reads ``NULL`` back as NaN (a value is never
missing otherwise). Infinities are stored as such; inside chunks every float keeps its exact bits.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

# The directory of runs when none is named: every command (`deepscope board`, `import-tensorboard`) and ds.board()
# use this one, TensorBoard's and SummaryWriter's own default.
RUNS_DIR = "runs"
DB_NAME = "run.db"
LOCK_NAME = "run.lock"
RANK_LOCKS = "run.rank*.lock"  # rank k > 0 of a distributed job: run.rank<k>.lock
FILES_DIR = "files"
APPLICATION_ID = 0x64736370  # "dscp": marks a file as a deepscope run in the SQLite header
SCHEMA_VERSION = 1
CHUNK = 4096  # points per packed scalar chunk

# Settings for every connection that writes. WAL lets readers read while the writer writes; synchronous=NORMAL
# in WAL mode keeps every committed transaction across a crash of the process (only a power cut can lose the
# last ones, never corrupt the file). Tests may replace this tuple (e.g. a small max_page_count for "disk full").
WRITE_PRAGMAS: tuple[str, ...] = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``sql`` takes a database at ``version - 1`` to ``version``."""

    version: int
    name: str
    sql: str


_V1 = """
CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
CREATE TABLE run_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tags (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE scalars (
    tag_id INTEGER NOT NULL REFERENCES tags(id), step INTEGER NOT NULL, epoch INTEGER,
    wall_time REAL NOT NULL, value REAL
);
CREATE INDEX scalars_tag ON scalars(tag_id);
CREATE TABLE scalar_chunks (
    id INTEGER PRIMARY KEY, tag_id INTEGER NOT NULL REFERENCES tags(id), n INTEGER NOT NULL,
    step_min INTEGER NOT NULL, step_max INTEGER NOT NULL,
    steps BLOB NOT NULL, vals BLOB NOT NULL, epochs BLOB NOT NULL, wall_times BLOB NOT NULL
);
CREATE INDEX scalar_chunks_tag ON scalar_chunks(tag_id, step_max);
CREATE TABLE histograms (
    id INTEGER PRIMARY KEY, tag_id INTEGER NOT NULL REFERENCES tags(id), step INTEGER NOT NULL,
    wall_time REAL NOT NULL, low REAL, high REAL, counts BLOB NOT NULL, counts_dtype TEXT NOT NULL,
    layer TEXT NOT NULL, kind TEXT NOT NULL, mean REAL, std REAL, zero_fraction REAL, norm REAL,
    count INTEGER NOT NULL, nonfinite INTEGER NOT NULL
);
CREATE INDEX histograms_tag ON histograms(tag_id, step);
-- every other kind of record (graphs, text, images, ...) as JSON, with an optional file beside the database
CREATE TABLE objects (
    id INTEGER PRIMARY KEY, tag_id INTEGER NOT NULL REFERENCES tags(id), step INTEGER NOT NULL,
    wall_time REAL NOT NULL, data TEXT NOT NULL, file TEXT
);
CREATE INDEX objects_tag ON objects(tag_id, step);
"""

# Every later layout appends a step here; a database is brought up to date when a writer opens it.
MIGRATIONS: tuple[Migration, ...] = (Migration(1, "first release", _V1),)


def db_path(run_dir: Path) -> Path:
    return run_dir / DB_NAME


def version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of an open database, after checking that it is a deepscope run.

    Returns 0 for a database with no tables at all (created but never initialised: a crash at the very start).
    Raises ``StoreError`` naming ``path`` for a file that is not SQLite, another program's database, or one
    written by a newer deepscope.
    """
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a readable SQLite database ({e}); it was left untouched") from e
    if app_id == 0 and tables == 0:
        return 0
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database but not a deepscope run (application_id {app_id:#x})")
    if user_version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {user_version}, newer than this deepscope understands ({SCHEMA_VERSION}): "
            "upgrade deepscope to read it"
        )
    return user_version


def migrate(conn: sqlite3.Connection, path: Path, migrations: tuple[Migration, ...] | None = None) -> list[int]:
    """Bring a writable database up to the newest schema; each step is one transaction. Returns the steps applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    steps = MIGRATIONS if migrations is None else migrations
    applied = []
    current = version(conn, path)
    for step in steps:
        if step.version <= current:
            continue
        if step.version != current + 1:
            raise StoreError(f"{path}: no migration from schema version {current} to {step.version}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if current == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for statement in step.sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {step.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = step.version
        applied.append(step.version)
    return applied


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that sees each new commit of a live writer (autocommit: every query, a new snapshot).

    A finished run in a directory this process cannot write (an archive) has no ``-shm`` file and SQLite cannot
    create one, so it is then opened as immutable, which is safe because nobody can be writing it.
    """
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as e:
        if not _writable(path.parent):
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        raise StoreError(f"{path} cannot be opened ({e}); it was left untouched") from e
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a readable SQLite database ({e}); it was left untouched") from e


def connect_writable(path: Path, resume: bool) -> sqlite3.Connection:
    """A connection for the writer in autocommit mode (transactions are explicit), schema checked and up to date.

    Nothing is written to the file before it is known to be a deepscope run (or a new, empty file): a foreign or
    corrupted database raises ``StoreError`` naming it and is left as it was. An existing run is also checked
    with ``PRAGMA quick_check`` before anything is added to it.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path} for writing ({e}); check that its directory is writable") from e
    try:
        current = version(conn, path)
        if resume and current > 0:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise StoreError(
                    f"{path} is corrupted ({'; '.join(problems)}); it was left untouched. Copy it before trying "
                    "`sqlite3 run.db .recover`, and log to a new run."
                )
        for pragma in WRITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}").fetchall()
        migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreError(f"{path} cannot be written ({e}); it was left untouched") from e
    except BaseException:
        conn.close()
        raise
    return conn


def _writable(directory: Path) -> bool:
    import os

    return os.access(directory, os.W_OK)
