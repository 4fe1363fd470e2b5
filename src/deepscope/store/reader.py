"""Read-only access to one run, safe while the run is being written (what a dashboard uses).

Every query starts a new snapshot, so a reader sees each batch the writer commits (at least every
``flush_interval``) on its next call. A query that spans several tables runs in one read transaction, so it never
sees a batch half applied. A damaged file raises ``StoreError`` naming it; the reader never writes to a run.

What is stored where is the backend's business (:class:`~deepscope.store.backend.ReadBackend`; SQLite in
:mod:`deepscope.store.sqlite`); step ranges, downsampling and decoding records through their kinds' codecs are
the reader's, the same for every backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, StoreError, close_names
from . import schema
from .backend import ReadBackend
from .locations import locate, open_reader
from .records import Record, Stored, codec_named
from .records.checkpoint import KIND as CHECKPOINT
from .records.checkpoint import load as load_checkpoint
from .records.scalar import KIND as SCALAR
from .sampling import downsample, spread
from .sqlite import SQLiteReader, writer_alive

__all__ = ["Reader", "Series", "UnreadableRecord", "downsample", "spread", "writer_alive"]

# Steps are stored as SQLite / PostgreSQL 64-bit integers: a bound outside is a bad request, not an overflow.
STEP_RANGE = (-(2**63), 2**63 - 1)


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


@dataclass(frozen=True)
class UnreadableRecord:
    """A record a reader passed over (:meth:`Reader.records` with ``unreadable``): its tag, its step and why it
    cannot be read (a damaged row, a missing or damaged file)."""

    tag: str
    step: int
    error: str


class Reader:
    """One run, read-only: its info, config, tags and records.

    Args:
        path: the run directory (or its ``run.db``), or a PostgreSQL URL (``postgresql://user@host/db``).
        name: the run's name in a PostgreSQL store; without ``path``, the run of that name in the store the
            environment variable ``DEEPSCOPE_STORE`` names (as :class:`deepscope.Run` finds it).

    A ``Reader`` may be shared between threads (a web server's workers): calls are serialised.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, name: str | None = None) -> None:
        path, name = locate(path, name)
        self._over(open_reader(path, name), name)

    @classmethod
    def over(cls, backend: ReadBackend, name: str | None = None) -> Reader:
        """A reader of the run an open backend serves (a board's readers share one database connection); closing
        the reader closes the backend."""
        reader = cls.__new__(cls)
        reader._over(backend, name)
        return reader

    def _over(self, backend: ReadBackend, name: str | None) -> None:
        self._store: ReadBackend = backend
        if isinstance(self._store, SQLiteReader):
            self.db, self.path = self._store.db, self._store.path
        else:  # a named run in a database: messages name it
            self.db, self.path = Path(self._store.location), Path(name or "")

    # ---- what the run is ----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The run's name, creation time, host, pid and status; ``status`` is ``"running"`` only while a writer
        holds the run (a run whose writer died says ``"interrupted"``). A run of a distributed job also says its
        ``world_size`` and ``ranks``: each rank that opened it, ``"running"`` or the status it closed with."""
        info = self._store.info()
        if info.get("status") == "running" and not self._store.writer_alive():
            info["status"] = "interrupted"
        return info

    def stamp(self) -> tuple[Any, ...] | None:
        """A token that changes whenever the run's data does, to key a cache of what was read from it; ``None``
        while a writer holds the run (it may change any time)."""
        return self._store.stamp()

    def live_stamp(self) -> tuple[Any, ...]:
        """A token that changes with every commit the writer makes, also while it holds the run (where :meth:`stamp`
        is ``None``): it says that the run changed since it was taken (a live page refetches), never that a read may
        be kept."""
        return self._store.live_stamp()

    def file(self, relative: str) -> bytes:
        """The content of a record's file, by the reference :meth:`files` lists (``files/...``): from the run
        directory, or from the database that holds the run. Only a reference of that form is read: a name that leaves
        the run's ``files/`` (absolute, ``..``) is refused."""
        parts = relative.split("/")
        bad = any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts)
        if parts[0] != schema.FILES_DIR or len(parts) < 2 or bad:
            raise BadInputError(f"{relative!r} is not a file of a run: give a reference as Reader.files lists it")
        try:
            return self._store.files.read(relative)
        except OSError as e:
            raise StoreError(f"{self._store.files.where(relative)} cannot be read: {e}") from e

    def config(self) -> dict[str, Any]:
        """The run's configuration (hyperparameters), as logged."""
        return self._store.config()

    def tags(self, kind: str | None = None) -> dict[str, str]:
        """Every tag and its kind (``"scalar"``, ``"histogram"``, ``"graph"``, ``"text"``, ``"image"``, ``"audio"``,
        ``"video"``, ``"custom_scalars"``, ``"embedding"``, ``"pr_curve"``, ``"confusion_matrix"``,
        ``"explanation"``, ...), by name."""
        return {name: k for name, k in self._store.tags().items() if kind is None or k == kind}

    # ---- scalars ------------------------------------------------------------------------------------------------

    def scalars(
        self, tag: str, start: int | None = None, end: int | None = None, max_points: int | None = None
    ) -> Series:
        """The points of a scalar tag with ``start <= step <= end`` (either bound optional), in the order logged.

        With ``max_points``, a longer series is downsampled to at most that many points by :func:`downsample`
        (per step bucket its minimum and maximum, plus the first and last points), over the requested range: ask
        again with a narrower range to zoom in.
        """
        _check_bounds(start, end)
        tag_id = self._tag_id(tag, SCALAR)
        try:
            steps, values, epochs, walls = self._store.scalars(tag_id, start, end)
        except StoreError as e:
            raise StoreError(f"scalar tag {tag!r}: {e}") from e
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
        self,
        tag: str,
        start: int | None = None,
        end: int | None = None,
        max_records: int | None = None,
        unreadable: list[UnreadableRecord] | None = None,
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
        :class:`SanityCurves`, :class:`FaithfulnessCurves` and :class:`ComparisonTable` (float64 arrays): each
        kind as its codec in :mod:`deepscope.store.records` decodes it.

        With ``max_records``, a longer series is thinned to that many records spread evenly over it in the order
        logged, the first and the last always among them (:meth:`count` says how many there are); only those
        rows are read.

        A record that cannot be read (a damaged row or file) raises ``StoreError`` naming it; given a list as
        ``unreadable``, it is appended there instead (an :class:`UnreadableRecord`) and the others are returned.
        """
        if max_records is not None and max_records < 2:
            raise BadInputError(f"max_records must be at least 2 (the first and the last record), not {max_records}")
        _check_bounds(start, end)
        kind, table, tag_id = self._record_tag(tag)
        found = []
        for row in self._store.records(table, tag_id, start, end, max_records):
            try:
                found.append(self._record(tag, kind, row))
            except StoreError as e:
                if unreadable is None:
                    raise
                unreadable.append(UnreadableRecord(tag, int(row.step), str(e)))
        return found

    def count(self, tag: str, start: int | None = None, end: int | None = None) -> int:
        """How many records a non-scalar tag holds with ``start <= step <= end`` (a scalar series says it in
        :attr:`Series.total`)."""
        _check_bounds(start, end)
        _, table, tag_id = self._record_tag(tag)
        return self._store.count(table, tag_id, start, end)

    def _record_tag(self, tag: str) -> tuple[str | None, str, int]:
        """The kind of a non-scalar tag, its table and its id."""
        kind = self.tags().get(tag)
        if kind == SCALAR:
            raise BadInputError(f"{tag!r} holds scalars: read it with Reader.scalars({tag!r})")
        tag_id = self._tag_id(tag, kind)
        codec = codec_named(kind)
        return kind, codec.table if codec is not None else "objects", tag_id

    def files(
        self, tag: str, unreadable: list[UnreadableRecord] | None = None
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The files of an image, audio, video, embedding or explanation tag without reading them, in the order
        logged: per record its step, its path relative to the run directory (``/`` separators; for an explanation
        set, the folder of its pictures) and its stored metadata (``shape``, ...; for an explanation set, every
        picture's path too). A damaged row raises ``StoreError``, or with ``unreadable`` is listed there (as by
        :meth:`records`)."""
        kind = self.tags().get(tag)
        codec = codec_named(kind)
        if kind is not None and (codec is None or not codec.has_files):
            raise BadInputError(f"{tag!r} holds {kind} records, which have no files")
        tag_id = self._tag_id(tag, kind)
        found = []
        for row in self._store.records("objects", tag_id, None, None, None):
            if row.error is None:
                found.append((int(row.step), row.file or "", row.data))
                continue
            where = f"{self.db}: the {kind} record of {tag!r} at step {row.step}"
            error = StoreError(f"{where} cannot be read: {row.error}")
            if unreadable is None:
                raise error
            unreadable.append(UnreadableRecord(tag, int(row.step), str(error)))
        return found

    def _record(self, tag: str, kind: str | None, stored: Stored) -> Record:
        codec = codec_named(kind)
        if codec is None:
            raise StoreError(f"{self.db}: tag {tag!r} has kind {kind!r}, which this deepscope cannot read")
        where = f"{self.db}: the {kind} record of {tag!r} at step {stored.step} cannot be read"
        if stored.error is not None:
            raise StoreError(f"{where}: {stored.error}")
        try:
            return codec.decode(tag, stored, self._store.files)  # type: ignore[no-any-return]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:  # a row damaged on disk
            raise StoreError(f"{where}: {type(e).__name__}: {e}") from e

    # ---- checkpoints --------------------------------------------------------------------------------------------

    def checkpoints(self, tag: str = "checkpoint") -> list[int]:
        """The steps at which ``Run.checkpoint`` kept the weights under ``tag``, in increasing order (``[]`` if
        none were kept)."""
        if self.tags().get(tag) is None:
            return []
        tag_id = self._tag_id(tag, CHECKPOINT)
        return sorted({int(s.step) for s in self._store.records("objects", tag_id, None, None, None)})

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
        tag_id = self._tag_id(tag, CHECKPOINT)
        relative = self._store.records("objects", tag_id, int(step), int(step), None)[-1].file or ""
        try:
            return load_checkpoint(self._store.files, relative)
        except (OSError, RuntimeError, EOFError) as e:
            raise StoreError(
                f"{self._store.files.where(relative)}, the checkpoint of {tag!r} at step {step}, cannot be read: {e}"
            ) from e

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _tag_id(self, tag: str, kind: str | None) -> int:
        found = self._store.tag(tag)
        if found is None:
            names = list(self.tags())
            hint = close_names(tag, names)
            raise BadInputError(
                f"{self.path} has no tag {tag!r}"
                + (f"; close names: {', '.join(map(repr, hint))}" if hint else f"; it has {len(names)} tags")
            )
        if kind is not None and found[1] != kind:
            raise BadInputError(f"{tag!r} holds {found[1]} records, not {kind} records")
        return found[0]

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Reader({str(self.path)!r})"


def _check_bounds(start: int | None, end: int | None) -> None:
    """A ``BadInputError`` for a step bound no stored step can reach (beyond 64 bits)."""
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not STEP_RANGE[0] <= bound <= STEP_RANGE[1]:
            low, high = STEP_RANGE
            raise BadInputError(f"{name}={bound} is outside the steps a run can hold ({low} to {high})")
