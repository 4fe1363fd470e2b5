"""Method comparisons: explanation methods ranked by faithfulness and sanity, stored as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, plain_fields, register

# The result objects of deepscope.evaluate are read by their public attributes (checked here); they are not
# imported, not even for type checking: the store sits below the code that computes them.

KIND = "method_comparison"

# The metrics a method comparison measures, and which way is better for each: deletion AUC and the rank correlation
# kept through the randomisation cascade (its mean over the steps) should be low. Here, with the record, so
# readers of the store need not import torch.
COMPARISON_METRICS = ("deletion", "insertion", "sanity")
LOWER_IS_BETTER = {"deletion": True, "insertion": False, "sanity": True}


@dataclass(frozen=True)
class ComparisonTable:
    """Explanation methods ranked by faithfulness and sanity at a step, best first.

    ``metrics`` are among ``"deletion"``, ``"insertion"``, ``"sanity"`` and ``sort_by`` is one of them; ``mean``
    and ``std`` float ``[M, len(metrics)]`` hold each method's mean over the inputs and its spread (NaN where not
    measured, as for a method that failed); ``errors`` says, per method, why it could not explain the model
    (``None`` when it could). :func:`comparison_table` makes one from a :class:`deepscope.evaluate.MethodComparison`;
    the store keeps it as JSON in the database.
    """

    tag: str
    step: int
    metrics: list[str]
    sort_by: str
    methods: list[str]
    mean: np.ndarray
    std: np.ndarray
    errors: list[str | None]
    wall_time: float | None = None


@register
class ComparisonCodec(Codec):
    kind = KIND
    record = ComparisonTable
    view = "evaluation"

    def normalise(self, record: ComparisonTable) -> dict[str, Any]:
        tag, metrics = record.tag, [str(x) for x in record.metrics]
        if not metrics or any(x not in COMPARISON_METRICS for x in metrics) or record.sort_by not in metrics:
            raise BadInputError(
                f"{tag!r}: metrics are among {COMPARISON_METRICS} and sort_by one of them, not {metrics}"
            )
        m = len(record.methods)
        arrays = {name: array(getattr(record, name)).astype(np.float64) for name in ("mean", "std")}
        if any(a.shape != (m, len(metrics)) for a in arrays.values()) or len(record.errors) != m:
            raise BadInputError(
                f"{tag!r}: mean, std are [M, metrics] = [{m}, {len(metrics)}] and errors one per method"
            )
        errors = [None if e is None else str(e) for e in record.errors]
        return {"metrics": metrics, "methods": [str(x) for x in record.methods], **arrays, "errors": errors}

    def encode(self, record: ComparisonTable, files: FileSink) -> Stored:
        return Stored(int(record.step), record.wall_time, plain_fields(record))

    def decode(self, tag: str, stored: Stored, files: FileSource) -> ComparisonTable:
        data = dict(stored.data)
        k = len(data["metrics"])
        for name in ("mean", "std"):
            data[name] = np.asarray(data[name], dtype=np.float64).reshape(-1, k)
        return ComparisonTable(tag, stored.step, wall_time=stored.wall_time, **data)


@loggable(("deepscope.evaluate.comparison", "MethodComparison"), description="MethodComparison")
def _comparison(value: Any, tag: str, step: int) -> list[Any]:
    return [comparison_table(value, tag, step)]


def comparison_table(comparison: Any, tag: str = "method_comparison", step: int = 0) -> ComparisonTable:
    """The record of a :class:`deepscope.evaluate.MethodComparison`: its rows in order (best first), each metric's
    mean (exactly the row's value) and spread over the inputs, and why failed methods failed."""
    rows, metrics = getattr(comparison, "rows", None), getattr(comparison, "metrics", None)
    if rows is None or metrics is None or not hasattr(comparison, "sort_by"):
        raise BadInputError(
            f"{tag!r}: expected a deepscope.evaluate.MethodComparison (from compare_methods), "
            f"not {type(comparison).__name__}"
        )
    aucs = getattr(comparison, "aucs", {}) or {}
    nan = float("nan")
    mean = [[nan if row.value(m) is None else float(row.value(m)) for m in metrics] for row in rows]
    std = [
        [
            float(array(aucs[row.method][m]).astype(np.float64).std()) if m in aucs.get(row.method, {}) else nan
            for m in metrics
        ]
        for row in rows
    ]
    k = len(metrics)
    return ComparisonTable(
        tag,
        step,
        metrics=[str(m) for m in metrics],
        sort_by=str(comparison.sort_by),
        methods=[str(row.method) for row in rows],
        mean=np.array(mean, dtype=np.float64).reshape(len(rows), k),
        std=np.array(std, dtype=np.float64).reshape(len(rows), k),
        errors=[None if row.error is None else str(row.error) for row in rows],
    )
