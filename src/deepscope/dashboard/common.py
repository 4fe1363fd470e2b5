"""What every view's pure functions share: where they read from, how a read fails, how numbers become JSON.

Nothing here knows about HTTP. What is served is a :class:`~deepscope.dashboard.sources.Source` (a directory of
runs, or a PostgreSQL database; a function given a directory's path serves that directory). Data is read only
through :class:`deepscope.store.Reader`, opened anew for each call, so a call sees the runs and points written since
the last one. A run name or a file reference from a request is resolved by the source, which refuses anything
outside what it serves (:func:`~deepscope.dashboard.sources.run_dir`, :func:`~deepscope.dashboard.sources.file_path`).
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from ..errors import BadInputError, StoreError
from ..store import Reader, UnreadableRecord
from ..store.records.explanation import KIND as EXPLANATION
from ..store.records.image import KIND as IMAGE
from .sources import NotFound, Shared, Source, source

__all__ = [
    "EncodedCache",
    "NotFound",
    "Recent",
    "Served",
    "Unreadable",
    "as_float",
    "at_step",
    "check_kind",
    "clean",
    "dumps",
    "file_url",
    "floats",
    "natural_key",
    "open_reader",
    "packed",
    "packed32",
    "readable_records",
    "records_of",
    "source_of",
    "stamp_of",
    "unreadable_json",
]

# What a view reads from: a source, or the path of a directory of runs.
Served = Source | Path


def source_of(root: Served) -> Source:
    """What a view reads from: a path names a directory of runs."""
    return root if not isinstance(root, Path) else source(root)


@contextmanager
def open_reader(root: Served, run: str) -> Iterator[Reader]:
    """An open reader of the run, with every failure to read as :class:`NotFound`; closed afterwards."""
    served = source_of(root)
    try:
        with served.reader(run) as reader:
            yield reader
    except BadInputError as e:  # an unknown tag, or one of another kind
        raise NotFound(str(e)) from e
    except StoreError as e:
        raise Unreadable(f"run {run!r} cannot be read: {e}") from e


class Unreadable(NotFound):
    """A run that is there but cannot be read (a damaged file): a 404 naming why for a request about that run; a
    request about many runs lists it (``"unreadable"``) and answers for the others."""


def unreadable_json(root: Served, found: list[UnreadableRecord]) -> list[dict[str, Any]]:
    """Records a reader passed over, as an answer lists them: ``[{"tag", "step", "error"}]``, the error naming
    files relative to what is served."""
    served = source_of(root)
    return [{"tag": u.tag, "step": u.step, "error": served.private(u.error)} for u in found]


def readable_records(root: Served, run: str, tag: str, kind: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """:func:`records_of`, passing over the records that cannot be read (a damaged row or file): the others, and
    those as :func:`unreadable_json` lists them."""
    passed: list[UnreadableRecord] = []
    records = records_of(root, run, tag, kind, passed)
    return records, unreadable_json(root, passed)


def check_kind(reader: Reader, run: str, tag: str, kind: str) -> None:
    """:class:`NotFound` unless the run has ``tag`` and it holds records of ``kind``."""
    found = reader.tags().get(tag)
    if found != kind:
        held = f" (it holds {found} records)" if found else ""
        raise NotFound(f"run {run!r} has no {kind} tag {tag!r}{held}")


def records_of(
    root: Served, run: str, tag: str, kind: str, unreadable: list[UnreadableRecord] | None = None
) -> list[Any]:
    """The records of a tag of the given kind (for images: their files, unread), or :class:`NotFound`; with
    ``unreadable``, a record that cannot be read is listed there instead of failing the call."""
    with open_reader(root, run) as reader:
        check_kind(reader, run, tag, kind)
        if kind in (IMAGE, EXPLANATION):
            return reader.files(tag, unreadable=unreadable)
        return reader.records(tag, unreadable=unreadable)


def at_step(
    records: list[Any], step: int | None, run: str, tag: str, unreadable: list[dict[str, Any]] | None = None
) -> Any:
    """The last record logged at ``step`` (records, or ``(step, file, data)`` rows), the last of all for ``None``;
    :class:`Unreadable` when the one asked for is among ``unreadable`` (:func:`readable_records`)."""
    steps = [r[0] if isinstance(r, tuple) else r.step for r in records]
    if step is None and records:
        return records[-1]
    if step in steps:
        return records[len(steps) - 1 - steps[::-1].index(step)]
    damaged = [u for u in unreadable or () if step is None or u["step"] == step]
    if damaged:
        raise Unreadable(f"run {run!r}: {damaged[-1]['error']}")
    raise NotFound(f"run {run!r} has no {tag!r} record at step {step}" + (f"; its steps: {steps}" if steps else ""))


def natural_key(name: str) -> tuple[Any, ...]:
    """A sort key comparing the numbers inside names as numbers: ``grad_norm/2`` before ``grad_norm/10``, ``[1]``
    before ``[10]`` (the page sorts alike, ``Intl.Collator`` with ``numeric``)."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part.casefold()) for part in re.split(r"(\d+)", name)
    )


def stamp_of(served: Source, run: str) -> tuple[Any, ...] | None:
    """What changes whenever the run's data does; ``None`` while a writer holds the run (it may change any time)."""
    return served.stamps([run])[0]


def file_url(run: str, path: str) -> str:
    """The address of a run's file (:func:`~deepscope.dashboard.sources.file_path`) as the API hands it out:
    relative (``api/file?...``, no leading ``/``), so the page resolves it against its own address and it works
    under any path prefix (a board behind JupyterHub's or VS Code's proxy is served at
    ``/user/<name>/proxy/<port>/``)."""
    return "api/file?" + urlencode({"run": run, "path": path})


# ---- caches -----------------------------------------------------------------------------------------------------


class EncodedCache:
    """A thread-safe LRU of encoded answers, bounded by their total size in bytes; ``live``: where the answers that
    cannot be kept (a run being written) are shared by the calls that ask at the same time (:class:`Shared`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.live = Shared()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """The total size of the answers kept."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class Recent:
    """A thread-safe LRU of the last ``entries`` values (located records, listings), keyed by what names them and
    the run's :func:`stamp_of`, so nothing stale is found again."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# ---- JSON -------------------------------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Compact JSON, as the server sends it; non-finite floats must already be strings."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def packed(values: np.ndarray) -> dict[str, str]:
    """An int64 or float64 array as ``{"dtype", "base64"}``: its little-endian bytes, base64-encoded."""
    dtype = "<f8" if values.dtype.kind == "f" else "<i8"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode()}


def packed32(values: np.ndarray) -> dict[str, str]:
    """Like :func:`packed`, in 32 bits (``<f4`` or ``<i4``): half the bytes, plenty for positions and codes."""
    dtype = "<f4" if values.dtype.kind == "f" else "<i4"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode()}


def as_float(x: float) -> float | str:
    """A float for JSON: non-finite ones as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if math.isfinite(x):
        return float(x)
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def floats(values: np.ndarray) -> list[float | str]:
    """An array's floats for JSON (:func:`as_float`)."""
    out: list[float | str] = values.tolist()
    bad = np.flatnonzero(~np.isfinite(values))
    for i in bad.tolist():  # usually none: keep the common case a single tolist()
        out[i] = as_float(out[i])  # type: ignore[arg-type]
    return out


def clean(value: Any) -> Any:
    """A JSON value with every non-finite float replaced by its string name."""
    if isinstance(value, float):
        return as_float(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
