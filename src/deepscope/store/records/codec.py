"""What a record kind is to the store: a :class:`Codec` registered once, found by record type or kind string.

A kind is one small module beside this one: its record dataclass, its kind string, how a record is checked before it
is queued (on the training thread), encoded into a stored row and files (on the writer thread) and decoded back (by a
reader), and which result objects of the rest of deepscope ``run.log`` turns into it (:class:`Loggable`). Writer,
Reader, ``Run`` and the board dispatch through :func:`codec_for` and :func:`codec_named`; adding a kind is adding a
module (and a view), not editing a ladder in each of them.

The store never imports torch or ``deepscope.track``: a tensor can only exist once torch is imported, so the helpers
here look torch up in ``sys.modules`` instead of importing it.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Protocol

import numpy as np

from ...errors import BadInputError, StoreError


@dataclass(frozen=True)
class Stored:
    """One record as a row: its step and wall time, ``data`` (JSON for the ``objects`` table, the columns of its own
    table otherwise), and ``file``, the path of its file (or folder of files) relative to the run, if any;
    ``error``: why a row read back cannot be decoded (its ``data`` is then empty), else ``None``."""

    step: int
    wall_time: float | None
    data: dict[str, Any]
    file: str | None = None
    error: str | None = None


class FileSink(Protocol):
    """Where an encoder puts a record's files: each under the record's own unique name (``files/<tag id>/<step>-
    <random>``) followed by ``suffix`` (``".png"``, or ``"/input-0.png"`` for a folder of files)."""

    @property
    def base(self) -> str:
        """The record's own name, relative to the run (``/`` separators)."""
        ...

    def put(self, suffix: str, content: bytes) -> str:
        """Store ``content`` as ``base + suffix``; returns that path."""
        ...


class FileSource(Protocol):
    """Where a decoder reads a record's files from."""

    def read(self, relative: str) -> bytes:
        """The content of a file; ``OSError`` if it cannot be read."""
        ...

    def where(self, relative: str) -> str:
        """The file's full name, for messages."""
        ...


class Codec:
    """One record kind. Subclasses set the class attributes and override what their kind needs.

    Attributes:
        kind: the kind string stored with each tag (``"pr_curve"``).
        record: the record dataclass.
        table: where records go: ``"objects"`` (JSON, the default), ``"histograms"``, or ``"scalars"``.
        stepped: whether records carry a step of their own (a graph does not).
        has_files: whether records keep files beside the database (``Reader.files`` lists them).
        view: the board's tab that shows the kind, or ``None``.
    """

    kind: ClassVar[str]
    record: ClassVar[type]
    table: ClassVar[str] = "objects"
    stepped: ClassVar[bool] = True
    has_files: ClassVar[bool] = False
    view: ClassVar[str | None] = None

    def check(self, record: Any, now: float) -> Any:
        """``record`` checked and normalised (wall time filled in, arrays as NumPy), or a ``BadInputError``."""
        if self.stepped:
            step = record.step
            if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
                raise BadInputError(f"{record.tag!r}: step must be a whole number >= 0, not {step!r}")
        changes = self.normalise(record)
        if self.stepped and record.wall_time is None:
            changes["wall_time"] = now
        return replace(record, **changes) if changes else record

    def normalise(self, record: Any) -> dict[str, Any]:
        """The fields of ``record`` to replace by checked, normalised values."""
        return {}

    def weight(self, record: Any) -> int:
        """How many values ``record`` counts for against the writer's ``max_pending``."""
        return 1

    def encode(self, record: Any, files: FileSink) -> Stored:
        raise StoreError(f"the store cannot write {self.kind} records as such")  # pragma: no cover

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Any:
        raise StoreError(f"{tag!r} holds {self.kind} records, which Reader.records does not read")


_BY_KIND: dict[str, Codec] = {}
_BY_TYPE: dict[type, Codec] = {}


def register(codec: type[Codec]) -> type[Codec]:
    """Class decorator: make ``codec`` the one codec of its kind and record type."""
    made = codec()
    if codec.kind in _BY_KIND or codec.record in _BY_TYPE:
        raise StoreError(f"the record kind {codec.kind!r} ({codec.record.__name__}) is registered twice")
    _BY_KIND[codec.kind] = _BY_TYPE[codec.record] = made
    return codec


def codec_for(record_type: type) -> Codec | None:
    """The codec of a record type, or ``None``."""
    return _BY_TYPE.get(record_type)


def codec_named(kind: str | None) -> Codec | None:
    """The codec of a kind string, or ``None`` for a kind this deepscope does not know."""
    return _BY_KIND.get(kind) if kind is not None else None


def codecs() -> Iterator[Codec]:
    """Every registered codec, in the order registered."""
    return iter(list(_BY_KIND.values()))


# ---- what run.log accepts besides numbers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Loggable:
    """Types ``run.log`` accepts, named ``(module, class)``, and the records a value of them becomes.

    A class is looked up in ``sys.modules`` without importing its module: a value of a class whose module was never
    imported cannot exist, and so logging numbers never pays for importing matplotlib or deepscope's evaluation code.
    """

    classes: tuple[tuple[str, str], ...]
    description: str  # what the error for an unknown value lists
    records: Callable[[Any, str, int], list[Any]]  # (value, tag, step) -> records

    def accepts(self, value: object) -> bool:
        for module_name, name in self.classes:
            module = sys.modules.get(module_name)
            if module is not None and isinstance(value, getattr(module, name)):
                return True
        return False


_LOGGABLE: list[Loggable] = []


def loggable(*classes: tuple[str, str], description: str) -> Callable[[Callable[..., list[Any]]], Any]:
    """Decorator on a function ``(value, tag, step) -> records``: ``run.log`` turns values of ``classes`` into them."""

    def add(convert: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        _LOGGABLE.append(Loggable(tuple(classes), description, convert))
        return convert

    return add


def loggables() -> tuple[Loggable, ...]:
    """What ``run.log`` accepts besides numbers, in the order registered."""
    return tuple(_LOGGABLE)


# ---- checks shared by the kinds ----------------------------------------------------------------------------------


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch: none can exist before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def array(value: object) -> np.ndarray:
    """A tensor (on any device) or array-like as a NumPy array."""
    if is_tensor(value):
        return value.detach().cpu().numpy()  # type: ignore[attr-defined]
    return np.asarray(value)


def whole(value: object, name: str) -> int:
    """``value`` as an int >= 0, or a ``BadInputError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise BadInputError(f"{name} must be a whole number >= 0, not {value!r}")
    return int(value)


def pixels(tag: str, value: object) -> np.ndarray:
    """An image as uint8 ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``, from uint8 or floats in [0, 1]."""
    image = array(value)
    shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise BadInputError(f"{tag!r}: an image is [H, W], [H, W, 3] or [H, W, 4] (channels last), not {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype.kind == "f":
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise BadInputError(f"{tag!r}: float pixels must lie in [0, 1]; scale them, or pass uint8")
        return np.round(image * 255).astype(np.uint8)
    raise BadInputError(f"{tag!r}: pixels must be uint8 or float in [0, 1], not {image.dtype}")


def real(value: float | None) -> float:
    """A stored ``REAL``: SQLite keeps NaN as ``NULL``."""
    return float("nan") if value is None else float(value)


def unreadable(files: FileSource, relative: str, what: str, tag: str, step: int, error: Exception) -> StoreError:
    return StoreError(f"{files.where(relative)}, {what} of {tag!r} at step {step}, cannot be read: {error}")


def plain_fields(record: Any) -> dict[str, Any]:
    """Every field of a record but ``tag``, ``step`` and ``wall_time`` as JSON data, arrays as lists (JSON keeps
    every float64 exactly, NaN included)."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    skip = ("tag", "step", "wall_time")
    return {f.name: plain(getattr(record, f.name)) for f in fields(record) if f.name not in skip}
