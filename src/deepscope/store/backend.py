"""What the writer and the reader need from where a run is kept: the seam between them and a storage engine.

:class:`~deepscope.store.writer.Writer` (the queue, the background thread, batching, the order of points) and
:class:`~deepscope.store.reader.Reader` (ranges, downsampling, decoding records through their codecs) are the same
for every engine; an engine implements :class:`WriteBackend` and :class:`ReadBackend`. SQLite
(:mod:`deepscope.store.sqlite`, one database file per run directory) is the embedded one.

Both sides speak in tag ids, encoded records (:class:`~deepscope.store.records.Stored`) and the four columns of a
scalar series (steps int64, values float64, epochs int64 with -1 for none, wall times float64); a table is
``"objects"`` (records as JSON), or the name of a kind's own table (``"histograms"``: records as columns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import StoreError
from .records import FileSink, FileSource, Stored


@dataclass
class StoredState:
    """What a resumed run already holds, for the ``Run`` to continue from."""

    kinds: dict[str, str] = field(default_factory=dict)
    last_steps: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created: bool = True


class WriteBackend(Protocol):
    """One run, open for writing by one writer (or by one writer per rank of a distributed job, each adding to its
    own tags only: :mod:`deepscope.store.ranks`). Every call but :meth:`unlock` comes from the writer's thread,
    between :meth:`begin` and :meth:`commit` (or :meth:`rollback`), except ``close``."""

    @property
    def location(self) -> str:
        """The run's name in messages."""
        ...

    @property
    def state(self) -> StoredState:
        """What the run held when it was opened."""
        ...

    def begin(self, batch: int) -> None:
        """Start the transaction of the writer's ``batch``-th batch (numbers increase within one writer)."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None:
        """Undo the batch: its rows, its files, and what the backend learnt during it (new tag ids)."""
        ...

    def transient(self, error: BaseException) -> bool:
        """Whether a batch failed because the store could not be reached (then :meth:`recover` may help), not
        because of what was written."""
        ...

    def recover(self, batch: int) -> bool:
        """Reach the store again after a transient failure (raises if it still cannot); returns whether ``batch``
        was committed after all (its commit went through but its answer was lost), so that it is not written
        twice."""
        ...

    def tag(self, name: str, kind: str) -> int:
        """The id of tag ``name``, created with ``kind`` if new."""
        ...

    def append_scalars(
        self, tag_id: int, steps: np.ndarray, values: np.ndarray, epochs: np.ndarray, walls: np.ndarray, *, pack: bool
    ) -> None:
        """Add points to a scalar tag after its others; with ``pack`` (the run is closing) leave nothing unpacked."""
        ...

    def unpacked(self) -> list[int]:
        """Scalar tags holding points that closing must still pack (``append_scalars`` with no points, ``pack``)."""
        ...

    def put(self, table: str, tag_id: int, stored: Stored) -> None:
        """Add one encoded record (its wall time filled in)."""
        ...

    def set_value(self, table: str, key: str, value: str | None) -> None:
        """Set (JSON text) or delete (``None``) a key of the run's ``"config"`` or ``"run_info"``."""
        ...

    def info_value(self, key: str) -> Any:
        """One key of the run's info as stored now (JSON decoded), or ``None``."""
        ...

    def exclusive(self) -> None:
        """Keep every other writer of the run from reaching this point until this batch ends, so that what the
        batch reads (:meth:`info_value`) no other rank changes before it commits."""
        ...

    def files(self, tag_id: int, step: int) -> FileSink:
        """Where the files of one new record go."""
        ...

    def close(self) -> None:
        """Close the connection (from the writer's thread, once it is done)."""
        ...

    def unlock(self) -> None:
        """Let another writer open the run (idempotent)."""
        ...


class ReadBackend(Protocol):
    """One run, read-only, safe to read while it is written; a new snapshot for each call."""

    @property
    def location(self) -> str: ...

    @property
    def files(self) -> FileSource:
        """Where the records' files are read from."""
        ...

    def info(self) -> dict[str, Any]:
        """The run's info as stored (``status`` as the writer left it)."""
        ...

    def config(self) -> dict[str, Any]: ...

    def tags(self) -> dict[str, str]:
        """Tag name -> kind, sorted by name."""
        ...

    def tag(self, name: str) -> tuple[int, str] | None:
        """The id and kind of a tag, or ``None``."""
        ...

    def scalars(
        self, tag_id: int, start: int | None, end: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The points of a scalar tag in the order logged: at least every point with ``start <= step <= end``
        (the reader filters exactly), from one snapshot."""
        ...

    def records(
        self, table: str, tag_id: int, start: int | None, end: int | None, max_records: int | None
    ) -> list[Stored]:
        """A tag's records with ``start <= step <= end`` in the order logged; with ``max_records``, only that many,
        spread evenly (:func:`~deepscope.store.sampling.spread`), first and last included."""
        ...

    def count(self, table: str, tag_id: int, start: int | None, end: int | None) -> int: ...

    def writer_alive(self) -> bool:
        """Whether a writer (of any rank) holds the run right now."""
        ...

    def stamp(self) -> tuple[Any, ...] | None:
        """A token that changes whenever the run's data does (a cache of what was read from the run keys on it);
        ``None`` while a writer holds the run, which may change it any time."""
        ...

    def live_stamp(self) -> tuple[Any, ...]:
        """A token that changes with every commit, a writer holding the run or not: what a live page watches to learn
        that something changed (never a cache key: a commit may land between taking it and reading)."""
        ...

    def close(self) -> None: ...


# ---- decoding what a backend read, the same for every engine: a damaged value names itself --------------------------


def json_pairs(rows: Iterable[tuple[str, str]], what: str, location: str) -> dict[str, Any]:
    """``key -> value`` of a run's ``config`` or ``run_info`` rows (values as JSON text); a value that is not JSON
    raises ``StoreError`` naming the key, so the run is reported unreadable instead of failing whoever lists it."""
    found = {}
    for key, value in rows:
        try:
            found[key] = json.loads(value)
        except (TypeError, ValueError) as e:
            raise StoreError(f"{location}: the {what} value of {key!r} is not JSON ({e})") from e
    return found


def object_row(step: int, wall_time: float | None, data: Any, file: str | None) -> Stored:
    """One row of ``objects`` as :class:`Stored`: its data decoded from JSON, or the reason it cannot be (``error``:
    the reader reports that record and serves the others)."""
    try:
        decoded = json.loads(data)
    except (TypeError, ValueError) as e:
        return Stored(step, wall_time, {}, file, error=f"its data is not JSON ({e})")
    if not isinstance(decoded, dict):
        return Stored(step, wall_time, {}, file, error=f"its data is JSON {type(decoded).__name__}, not an object")
    return Stored(step, wall_time, decoded, file)


SCALAR_COLUMNS = (np.int64, np.float64, np.int64, np.float64)  # steps, values, epochs, wall times


def scalar_columns(
    chunks: Sequence[Sequence[Any]], rows: Sequence[Sequence[Any]], where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A scalar series from its packed chunks (four little-endian blobs each, in the order of
    :data:`SCALAR_COLUMNS`) and its loose rows; ``StoreError`` naming ``where`` for a chunk whose blobs are not
    whole, equally long arrays, or a loose row that is not numbers."""
    packed: list[list[np.ndarray]] = [[], [], [], []]
    for number, chunk in enumerate(chunks):
        sizes = {len(blob) if isinstance(blob, bytes | bytearray | memoryview) else -1 for blob in chunk}
        if len(sizes) != 1 or min(sizes) < 0 or min(sizes) % 8:
            raise StoreError(f"{where}: packed chunk {number} is damaged (its arrays hold {sorted(sizes)} bytes)")
        for k, dtype in enumerate(SCALAR_COLUMNS):
            packed[k].append(np.frombuffer(chunk[k], dtype=np.dtype(dtype).newbyteorder("<")))
    columns = []
    for k, dtype in enumerate(SCALAR_COLUMNS):
        try:
            loose = np.array([row[k] for row in rows], dtype=dtype)  # NULL (a NaN) reads as NaN
        except (TypeError, ValueError) as e:
            raise StoreError(f"{where}: a loose point is damaged ({e})") from e
        columns.append(np.concatenate((*packed[k], loose)).astype(dtype, copy=False))
    steps, values, epochs, walls = columns
    return steps, values, epochs, walls
