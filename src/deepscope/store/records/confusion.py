"""Confusion matrices: counts of true against predicted classes at a step, stored as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, register

# The result objects of deepscope.evaluate are read by their public attributes (checked here); they are not
# imported, not even for type checking: the store sits below the code that computes them.

KIND = "confusion_matrix"


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix at a step: ``counts`` ``[K, K]`` whole numbers, row = true class, column = predicted.

    ``classes`` names the ``K`` classes in order. :func:`confusion` makes one from a
    :class:`deepscope.evaluate.ConfusionMatrix`; the store keeps it as JSON in the database.
    """

    tag: str
    step: int
    counts: np.ndarray
    classes: list[str]
    wall_time: float | None = None


@register
class ConfusionCodec(Codec):
    kind = KIND
    record = Confusion
    view = "evaluation"

    def normalise(self, record: Confusion) -> dict[str, Any]:
        counts = array(record.counts)
        k = counts.shape[0] if counts.ndim == 2 else 0
        if counts.ndim != 2 or counts.shape != (k, k) or k == 0 or counts.dtype.kind not in "iuf":
            raise BadInputError(f"{record.tag!r}: a confusion matrix is a numeric [K, K] array, not {counts.shape}")
        if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.round(counts)).any():
            raise BadInputError(f"{record.tag!r}: confusion counts must be whole numbers >= 0")
        classes = [str(c) for c in record.classes] if isinstance(record.classes, Sequence) else None
        if classes is None or isinstance(record.classes, str) or len(classes) != k:
            raise BadInputError(f"{record.tag!r}: give one class name per row of the [{k}, {k}] matrix")
        return {"counts": counts.astype(np.int64), "classes": classes}

    def weight(self, record: Confusion) -> int:
        return 1 + record.counts.size // 64

    def encode(self, record: Confusion, files: FileSink) -> Stored:
        data = {"counts": np.asarray(record.counts).tolist(), "classes": record.classes}
        return Stored(int(record.step), record.wall_time, data)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Confusion:
        counts = np.asarray(stored.data["counts"], dtype=np.int64)
        return Confusion(tag, stored.step, counts, stored.data["classes"], wall_time=stored.wall_time)


@loggable(("deepscope.evaluate.classification", "ConfusionMatrix"), description="ConfusionMatrix")
def _matrix(value: Any, tag: str, step: int) -> list[Any]:
    return [confusion(value, tag, step)]


def confusion(matrix: Any, tag: str = "confusion_matrix", step: int = 0) -> Confusion:
    """The record of a :class:`deepscope.evaluate.ConfusionMatrix` (its counts and class names)."""
    counts = getattr(matrix, "counts", None)
    classes = getattr(matrix, "classes", None)
    if counts is None or classes is None:
        raise BadInputError(
            f"{tag!r}: expected a deepscope.evaluate.ConfusionMatrix (from confusion_matrix or evaluate_model), "
            f"not {type(matrix).__name__}"
        )
    return Confusion(tag, step, array(counts), [str(c) for c in classes])
