"""Precision-recall curves: counts and rates at score thresholds, stored as JSON (the board draws ROC and PR)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, register

# The result objects of deepscope.evaluate are read by their public attributes (checked here); they are not
# imported, not even for type checking: the store sits below the code that computes them.

KIND = "pr_curve"
_ARRAYS = ("thresholds", "tp", "fp", "tn", "fn", "precision", "recall")


@dataclass(frozen=True)
class PRCurve:
    """A precision-recall curve at a step: counts and rates at ``len(thresholds)`` ascending score thresholds.

    At threshold ``t`` a prediction counts as positive when its score is at least ``t``; ``tp``, ``fp``, ``tn``,
    ``fn`` are (weighted) counts, ``precision`` and ``recall`` float arrays of the same length.
    """

    tag: str
    step: int
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    wall_time: float | None = None


@register
class PRCurveCodec(Codec):
    kind = KIND
    record = PRCurve
    view = "evaluation"

    def normalise(self, record: PRCurve) -> dict[str, Any]:
        arrays = {name: array(getattr(record, name)).astype(np.float64) for name in _ARRAYS}
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or next(iter(shapes)) == () or len(next(iter(shapes))) != 1:
            raise BadInputError(f"{record.tag!r}: a PR curve's arrays are 1-D and of one length, not {sorted(shapes)}")
        return arrays

    def encode(self, record: PRCurve, files: FileSink) -> Stored:
        data = {name: np.asarray(getattr(record, name), dtype=np.float64).tolist() for name in _ARRAYS}
        return Stored(int(record.step), record.wall_time, data)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> PRCurve:
        arrays = {name: np.asarray(values, dtype=np.float64) for name, values in stored.data.items()}
        return PRCurve(tag, stored.step, wall_time=stored.wall_time, **arrays)


@loggable(
    ("deepscope.evaluate.classification", "BinaryReport"),
    ("deepscope.evaluate.classification", "OneVsRest"),
    description="binary_report's BinaryReport or OneVsRest (PR curves)",
)
def _reports(value: Any, tag: str, step: int) -> list[Any]:
    return list(pr_curves(value, tag, step))


def pr_curves(report: Any, tag: str = "pr_curve", step: int = 0, num_thresholds: int = 127) -> list[PRCurve]:
    """PR curves of a :class:`deepscope.evaluate.BinaryReport` (one record under ``tag``) or of a
    :class:`~deepscope.evaluate.OneVsRest` (one record per class, under ``tag/<class>``).

    The counts are taken at ``num_thresholds`` evenly spaced thresholds: ``0, 1/(n-1), ..., 1`` for scores in
    [0, 1] (probabilities: the thresholds TensorBoard's ``add_pr_curve`` uses), else from the lowest to the
    highest score (logits). From these counts the board draws ROC and PR curves and both classes' score
    distributions.
    """
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise BadInputError(f"num_thresholds must be a whole number >= 2, not {num_thresholds!r}")
    reports = getattr(report, "reports", None)
    if reports is not None:
        classes = list(report.classes)  # type: ignore[union-attr]
        return [_pr_curve(r, f"{tag}/{name}", step, num_thresholds) for r, name in zip(reports, classes)]
    return [_pr_curve(report, tag, step, num_thresholds)]  # type: ignore[arg-type]


def _pr_curve(report: Any, tag: str, step: int, num_thresholds: int) -> PRCurve:
    labels = array(getattr(report, "labels", None)).reshape(-1)
    scores = array(getattr(report, "scores", None)).astype(np.float64).reshape(-1)
    if labels.shape != scores.shape or not labels.size or not np.isin(labels, (0, 1)).all():
        raise BadInputError(
            f"{tag!r}: expected a deepscope.evaluate.BinaryReport or OneVsRest (from binary_report), "
            f"not {type(report).__name__}"
        )
    low, high = (0.0, 1.0) if scores.min() >= 0 and scores.max() <= 1 else (scores.min(), scores.max())
    thresholds = np.linspace(low, high, num_thresholds)
    positive = labels == 1
    tp, fp = _at_least(scores[positive], thresholds), _at_least(scores[~positive], thresholds)
    fn, tn = positive.sum() - tp, (~positive).sum() - fp
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    return PRCurve(tag, step, thresholds, tp, fp, tn, fn, precision, recall)


def _at_least(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``scores`` are at least each threshold (a sorted search, not an ``[N, T]`` comparison)."""
    return (len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")).astype(np.float64)
