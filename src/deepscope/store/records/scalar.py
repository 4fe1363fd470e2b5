"""Scalars: one number of a series at a step. The writer keeps them on a fast path of its own (rows, then packed
chunks: :mod:`deepscope.store.schema`); this codec checks a :class:`Scalar` record given to ``Run.log_records``."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, is_tensor, register, whole

KIND = "scalar"


@dataclass(frozen=True)
class Scalar:
    """One value of a series at a step (and optionally an epoch); ``value`` may be NaN or infinite."""

    tag: str
    value: float
    step: int
    epoch: int | None = None
    wall_time: float | None = None


def as_number(tag: str, value: object) -> float | None:
    """``value`` as a float if it is a number or a one-element tensor or array, else ``None``; an error for one
    complex or non-numeric element."""
    if is_tensor(value):
        if value.numel() != 1:  # type: ignore[attr-defined]
            return None
        if value.is_complex():  # type: ignore[attr-defined]
            raise BadInputError(f"{tag!r}: a complex tensor is not a scalar; log its .abs() or .real")
        return float(value.item())  # type: ignore[attr-defined]
    if isinstance(value, np.ndarray) and value.size == 1:
        if value.dtype.kind not in "biuf":
            raise BadInputError(f"{tag!r}: a one-element {value.dtype} array is not a number; log a number")
        return float(value.reshape(()))
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def number(tag: str, value: object) -> float:
    """A loggable value as a float, or a clear error."""
    found = as_number(tag, value)
    if found is None:
        if is_tensor(value):
            raise BadInputError(
                f"{tag!r}: a scalar is one number, but this tensor has shape {list(value.shape)}. Reduce it "  # type: ignore[attr-defined]
                "(.mean(), .norm()) or log its distribution with Watcher / a Histogram record"
            )
        raise BadInputError(
            f"{tag!r}: cannot log a {type(value).__name__} ({value!r:.60}) as a scalar; log numbers or one-element "
            "tensors (text goes to run.note)"
        )
    return found


@register
class ScalarCodec(Codec):
    kind = KIND
    record = Scalar
    table = "scalars"
    view = "scalars"

    def normalise(self, record: Scalar) -> dict[str, Any]:
        changes: dict[str, Any] = {"value": number(record.tag, record.value)}
        if record.epoch is not None:
            changes["epoch"] = whole(record.epoch, "epoch")
        return changes
