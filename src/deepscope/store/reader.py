"""Read-only access to one run, safe while the run is being written (what a dashboard uses).

Every query starts a new snapshot, so a reader sees each batch the writer commits (at least every
``flush_interval``) on its next call. A query that spans several tables runs in one read transaction, so it never
sees a batch half applied. A damaged file raises ``StoreError`` naming it; the reader never writes to a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, StoreError, close_names
from . import schema
from .records import Record, Stored, codec_named
from .records.checkpoint import load as load_checkpoint

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Series:
    """Points of one scalar tag, in the order they were logged.

    Attributes:
        tag: the tag.
        steps: int64 ``[n]``.
        values: float64 ``[n]``; NaN and infinities are kept as logged.
        epochs: int64 ``[n]``, -1 where no epoch was given.
        wall_times: float64 ``[n]``, seconds since the epoch when each point was logged.
        total: how many points the tag has in the requested step range; more than ``len(steps)`` when the
            series was downsampled.
    """

    tag: str
    steps: np.ndarray
    values: np.ndarray
    epochs: np.ndarray
    wall_times: np.ndarray
    total: int

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def downsampled(self) -> bool:
        return len(self.steps) < self.total


class Reader:
    """One run, read-only: its info, config, tags and records.

    Args:
        path: the run directory (or its ``run.db``).

    A ``Reader`` may be shared between threads (a web server's workers): calls are serialised.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        given = Path(path)
        self.db = given if given.name == schema.DB_NAME and given.is_file() else schema.db_path(given)
        self.path = self.db.parent
        if not self.db.is_file():
            raise StoreError(f"no deepscope run at {given}: there is no {self.db}")
        self._conn = schema.connect_readonly(self.db)
        self._files = RunFiles(self.path)
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

    # ---- what the run is ----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The run's name, creation time, host, pid and status; ``status`` is ``"running"`` only while a writer
        holds the run (a run whose writer died says ``"interrupted"``)."""
        with self._reading():
            info = {key: json.loads(value) for key, value in self._conn.execute("SELECT key, value FROM run_info")}
        if info.get("status") == "running" and not writer_alive(self.path):
            info["status"] = "interrupted"
        return info

    def config(self) -> dict[str, Any]:
        """The run's configuration (hyperparameters), as logged."""
        with self._reading():
            return {key: json.loads(value) for key, value in self._conn.execute("SELECT key, value FROM config")}

    def tags(self, kind: str | None = None) -> dict[str, str]:
        """Every tag and its kind (``"scalar"``, ``"histogram"``, ``"graph"``, ``"text"``, ``"image"``, ``"audio"``,
        ``"video"``, ``"custom_scalars"``, ``"embedding"``, ``"pr_curve"``, ``"confusion_matrix"``,
        ``"explanation"``, ...), by name."""
        with self._reading():
            rows = self._conn.execute("SELECT name, kind FROM tags ORDER BY name").fetchall()
        return {name: k for name, k in rows if kind is None or k == kind}

    # ---- scalars ------------------------------------------------------------------------------------------------

    def scalars(
        self, tag: str, start: int | None = None, end: int | None = None, max_points: int | None = None
    ) -> Series:
        """The points of a scalar tag with ``start <= step <= end`` (either bound optional), in the order logged.

        With ``max_points``, a longer series is downsampled to at most that many points by :func:`downsample`
        (per step bucket its minimum and maximum, plus the first and last points), over the requested range: ask
        again with a narrower range to zoom in.
        """
        tag_id = self._tag_id(tag, "scalar")
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
        columns = []
        for k, dtype in enumerate((np.int64, np.float64, np.int64, np.float64)):
            packed = [np.frombuffer(chunk[k], dtype=np.dtype(dtype).newbyteorder("<")) for chunk in chunks]
            loose = np.array([row[k] for row in rows], dtype=dtype)  # NULL (a NaN) reads as NaN
            columns.append(np.concatenate((*packed, loose)).astype(dtype, copy=False))
        steps, values, epochs, walls = columns
        if start is not None or end is not None:
            keep = np.ones(len(steps), dtype=bool)
            if start is not None:
                keep &= steps >= start
            if end is not None:
                keep &= steps <= end
            steps, values, epochs, walls = steps[keep], values[keep], epochs[keep], walls[keep]
        total = len(steps)
        if max_points is not None and total > max_points:
            kept = downsample(steps, values, max_points)
            steps, values, epochs, walls = steps[kept], values[kept], epochs[kept], walls[kept]
        return Series(tag, steps, values, epochs, walls, total)

    # ---- everything else ----------------------------------------------------------------------------------------

    def records(
        self, tag: str, start: int | None = None, end: int | None = None, max_records: int | None = None
    ) -> list[Record]:
        """The records of a non-scalar tag with ``start <= step <= end``, in the order logged.

        Histograms come back as :class:`Histogram` (counts with the dtype they were logged with), graphs as
        :class:`Graph`, notes as :class:`Text`, images as :class:`Image` with uint8 pixels read from their file,
        sounds as :class:`Audio` (float32 samples ``[T, C]`` from their WAV file), clips as :class:`Video` (uint8
        RGB frames ``[T, H, W, 3]`` from their GIF), custom-scalar layouts as :class:`ScalarLayout`,
        embeddings as :class:`Embedding` (float32 features and projections, uint8 thumbnails), PR curves as
        :class:`PRCurve`,
        confusion matrices as :class:`Confusion` (int64 counts), explanation sets as :class:`ExplanationSet` with
        uint8 pictures read from their files, sanity checks, faithfulness curves and method comparisons as
        :class:`SanityCurves`, :class:`FaithfulnessCurves` and :class:`ComparisonTable` (float64 arrays).

        With ``max_records``, a longer series is thinned to that many records spread evenly over it in the order
        logged, the first and the last always among them (:meth:`count` says how many there are); only those
        rows are read.
        """
        if max_records is not None and max_records < 2:
            raise BadInputError(f"max_records must be at least 2 (the first and the last record), not {max_records}")
        kind, table, key, where, bounds = self._record_query(tag, start, end)
        query = f"SELECT * FROM {table} WHERE {where} ORDER BY {key}"
        with self._reading():
            if max_records is not None:  # choose among the ids alone, then read only the chosen rows
                ids = [row[0] for row in self._conn.execute(f"SELECT {key} FROM {table} WHERE {where}", bounds)]
                if len(ids) > max_records:
                    ids.sort()
                    chosen = [ids[i] for i in spread(len(ids), max_records).tolist()]
                    query = f"SELECT * FROM {table} WHERE {key} IN (SELECT value FROM json_each(?)) ORDER BY {key}"
                    bounds = [json.dumps(chosen)]
            cursor = self._conn.execute(query, bounds)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        return [self._record(tag, kind, row) for row in rows]

    def count(self, tag: str, start: int | None = None, end: int | None = None) -> int:
        """How many records a non-scalar tag holds with ``start <= step <= end`` (a scalar series says it in
        :attr:`Series.total`)."""
        _, table, _, where, bounds = self._record_query(tag, start, end)
        with self._reading():
            return int(self._conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", bounds).fetchone()[0])

    def _record_query(
        self, tag: str, start: int | None, end: int | None
    ) -> tuple[str | None, str, str, str, list[Any]]:
        """The kind of a non-scalar tag, its table and key, and the ``WHERE`` clause with its arguments that
        selects its records in the step range."""
        kind = self.tags().get(tag)
        if kind == "scalar":
            raise BadInputError(f"{tag!r} holds scalars: read it with Reader.scalars({tag!r})")
        tag_id = self._tag_id(tag, kind)
        codec = codec_named(kind)
        table, key = (codec.table if codec is not None else "objects"), "id"
        where, bounds = "tag_id = ?", list[Any]([tag_id])
        if start is not None:
            where += " AND step >= ?"
            bounds.append(int(start))
        if end is not None:
            where += " AND step <= ?"
            bounds.append(int(end))
        return kind, table, key, where, bounds

    def files(self, tag: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The files of an image, audio, video, embedding or explanation tag without reading them, in the order
        logged: per record its step, its path relative to the run directory (``/`` separators; for an explanation
        set, the folder of its pictures) and its stored metadata (``shape``, ...; for an explanation set, every
        picture's path too)."""
        kind = self.tags().get(tag)
        codec = codec_named(kind)
        if kind is not None and (codec is None or not codec.has_files):
            raise BadInputError(f"{tag!r} holds {kind} records, which have no files")
        tag_id = self._tag_id(tag, kind)
        with self._reading():
            rows = self._conn.execute(
                "SELECT step, file, data FROM objects WHERE tag_id = ? ORDER BY id", (tag_id,)
            ).fetchall()
        return [(int(step), file, json.loads(data)) for step, file, data in rows]

    def _record(self, tag: str, kind: str | None, row: dict[str, Any]) -> Record:
        codec = codec_named(kind)
        if codec is None:
            raise StoreError(f"{self.db}: tag {tag!r} has kind {kind!r}, which this deepscope cannot read")
        if codec.table == "objects":
            data = json.loads(row["data"])
        else:  # a table of the kind's own: its columns
            data = {k: v for k, v in row.items() if k not in ("id", "tag_id", "step", "wall_time")}
        return codec.decode(tag, Stored(row["step"], row["wall_time"], data, row.get("file")), self._files)

    # ---- checkpoints --------------------------------------------------------------------------------------------

    def checkpoints(self, tag: str = "checkpoint") -> list[int]:
        """The steps at which ``Run.checkpoint`` kept the weights under ``tag``, in increasing order (``[]`` if
        none were kept)."""
        kind = self.tags().get(tag)
        if kind is None:
            return []
        tag_id = self._tag_id(tag, "checkpoint")
        with self._reading():
            rows = self._conn.execute("SELECT DISTINCT step FROM objects WHERE tag_id = ? ORDER BY step", (tag_id,))
            return [int(step) for (step,) in rows]

    def checkpoint(self, step: int | None = None, tag: str = "checkpoint") -> dict[str, Any]:
        """The state dict kept at ``step`` (default: the last one kept), as CPU tensors, ready for
        ``model.load_state_dict``. A step kept twice gives the later snapshot."""
        steps = self.checkpoints(tag)
        if not steps:
            raise BadInputError(f"{self.path} holds no checkpoints under {tag!r}; keep some with run.checkpoint(model)")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise BadInputError(f"{self.path} has no checkpoint at step {step!r}; it has steps {steps}")
        tag_id = self._tag_id(tag, "checkpoint")
        with self._reading():
            (relative,) = self._conn.execute(
                "SELECT file FROM objects WHERE tag_id = ? AND step = ? ORDER BY id DESC LIMIT 1", (tag_id, int(step))
            ).fetchone()
        file = self.path / relative
        try:
            return load_checkpoint(self._files, relative)
        except (OSError, RuntimeError, EOFError) as e:
            raise StoreError(f"{file}, the checkpoint of {tag!r} at step {step}, cannot be read: {e}") from e

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _tag_id(self, tag: str, kind: str | None) -> int:
        with self._reading():
            row = self._conn.execute("SELECT id, kind FROM tags WHERE name = ?", (tag,)).fetchone()
        if row is None:
            names = list(self.tags())
            hint = close_names(tag, names)
            raise BadInputError(
                f"{self.path} has no tag {tag!r}"
                + (f"; close names: {', '.join(map(repr, hint))}" if hint else f"; it has {len(names)} tags")
            )
        if kind is not None and row[1] != kind:
            raise BadInputError(f"{tag!r} holds {row[1]} records, not {kind} records")
        return int(row[0])

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

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader({str(self.path)!r})"


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points that keep the shape of a series, ascending.

    The step range is cut into equal buckets; each keeps its lowest and highest value (infinities included), its
    first NaN if it has one, and the series keeps its first and last points. A spike therefore survives any
    zoom level, unlike with averaging or striding. ``steps`` need not be sorted (a restarted loop).

    Args:
        steps: int ``[n]``.
        values: float ``[n]``.
        max_points: at least 4.
    """
    n = len(steps)
    if max_points < 4:
        raise BadInputError(f"max_points must be at least 4, not {max_points}")
    if n <= max_points:
        return np.arange(n)
    nan = np.isnan(values)
    buckets = max(1, (max_points - 2) // (3 if nan.any() else 2))
    order = None
    if (np.diff(steps) < 0).any():
        order = np.argsort(steps, kind="stable")
        steps, values, nan = steps[order], values[order], nan[order]
    low, high = int(steps[0]), int(steps[-1])
    span = high - low + 1
    bucket = ((steps - low).astype(np.float64) * (buckets / span)).astype(np.int64)
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    sizes = np.diff(starts, append=n)
    kept = np.zeros(n, dtype=bool)  # a mask, not np.unique of the indices: O(n), no sort or hash
    kept[[0, n - 1]] = True
    for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        filled = np.where(nan, fill, values)
        extreme = reduce.reduceat(filled, starts)
        hit = np.flatnonzero(filled == np.repeat(extreme, sizes))
        kept[_first_of_each_bucket(hit, bucket)] = True
    if nan.any():
        kept[_first_of_each_bucket(np.flatnonzero(nan), bucket)] = True
    indices = np.flatnonzero(kept)
    return indices if order is None else np.sort(order[indices])


def spread(n: int, count: int) -> np.ndarray:
    """``count`` indices into ``n`` items (all of them if ``n <= count``), evenly spaced, first and last included.

    With ``n > count >= 2`` consecutive indices lie more than one apart before rounding, so none repeats.
    """
    if n <= count:
        return np.arange(n)
    return np.linspace(0, n - 1, count).round().astype(np.int64)


def _first_of_each_bucket(where: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """The first of the ascending indices ``where`` in each bucket (``bucket`` is non-decreasing along the series)."""
    of = bucket[where]
    return where[np.flatnonzero(np.diff(of, prepend=-1))]


def writer_alive(run_dir: Path) -> bool:
    """Whether some process holds the run's writer lock right now (without taking it for more than a moment)."""
    path = run_dir / schema.LOCK_NAME
    if fcntl is None or not path.exists():  # pragma: no cover - without locks, trust the stored status
        return fcntl is None
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


class RunFiles:
    """The files of a run directory, as decoders read them (:class:`~deepscope.store.records.FileSource`)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def read(self, relative: str) -> bytes:
        return (self.run_dir / relative).read_bytes()

    def where(self, relative: str) -> str:
        return str(self.run_dir / relative)
