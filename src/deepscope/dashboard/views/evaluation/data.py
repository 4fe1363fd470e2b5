"""What the Evaluation view answers: confusion matrices, PR curves, sanity checks, faithfulness, method comparisons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....store.records import LOWER_IS_BETTER
from ....store.records.comparison import KIND as COMPARISON
from ....store.records.confusion import KIND as CONFUSION
from ....store.records.faithfulness import KIND as FAITHFULNESS
from ....store.records.pr_curve import KIND as PR_CURVE
from ....store.records.sanity import KIND as SANITY
from ...common import Served, as_float, at_step, floats, readable_records


def _chosen(root: Served, run: str, tag: str, kind: str, step: int | None) -> tuple[Any, dict[str, Any]]:
    """The record of a tag of ``kind`` at ``step`` (the last logged for ``None``), and what every Evaluation answer
    starts with: ``{"run", "tag", "unreadable", "steps": every step logged, "step": the one shown}``."""
    records, unreadable = readable_records(root, run, tag, kind)
    chosen = at_step(records, step, run, tag, unreadable)
    return chosen, {
        "run": run,
        "tag": tag,
        "unreadable": unreadable,
        "steps": [r.step for r in records],
        "step": chosen.step,
    }


def confusion_matrix(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A confusion matrix at ``step`` (default: the last one logged under the tag), counts and row-normalised.

    ``{"run", "tag", "steps": every step logged, "step", "classes", "counts": [K][K] (row = true class),
    "normalized": each row divided by its total (0 for a class without samples), "accuracy", "total"}``.
    """
    chosen, head = _chosen(root, run, tag, CONFUSION, step)
    counts = np.asarray(chosen.counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    total = int(counts.sum())
    return {
        **head,
        "classes": chosen.classes,
        "counts": counts.tolist(),
        "normalized": normalized.tolist(),
        "accuracy": float(np.trace(counts)) / total if total else 0.0,
        "total": total,
    }


def pr_curve(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """ROC and PR curves and both classes' score distributions of a binary classifier at ``step`` (default: last).

    From the counts stored per threshold: ``fpr = fp / (fp + tn)``, ``tpr = recall = tp / (tp + fn)``; ``auc`` is
    the trapezoidal area under the ROC points, closed by (0, 0) and (1, 1). The scores of each class fall into
    the bins between consecutive thresholds: ``positives[i] = tp[i] - tp[i + 1]`` (the last bin: ``tp[-1]``),
    likewise ``negatives`` from ``fp``, so the distributions come from the same counts, with ``edges`` = the
    thresholds. Keys: ``run, tag, steps, step, thresholds, tp, fp, tn, fn, precision, recall, fpr, tpr, auc,
    positives, negatives``.
    """
    c, head = _chosen(root, run, tag, PR_CURVE, step)
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (c.tp, c.fp, c.tn, c.fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr, tpr = fp / (fp + tn), tp / (tp + fn)
    finite = np.isfinite(fpr) & np.isfinite(tpr)
    x, y = np.r_[0.0, fpr[finite], 1.0], np.r_[0.0, tpr[finite], 1.0]
    order = np.lexsort((y, x))
    auc = float(np.trapezoid(y[order], x[order])) if finite.any() else float("nan")
    return {
        **head,
        **{name: floats(np.asarray(getattr(c, name), dtype=np.float64)) for name in ("thresholds", "precision")},
        **{name: floats(a) for name, a in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn))},
        "recall": floats(np.asarray(c.recall, dtype=np.float64)),
        "fpr": floats(fpr),
        "tpr": floats(tpr),
        "auc": as_float(auc),
        "positives": floats(tp - np.r_[tp[1:], 0.0]),
        "negatives": floats(fp - np.r_[fp[1:], 0.0]),
    }


def sanity_check(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A sanity check's similarity curves at ``step`` (default: the last logged under the tag).

    ``{"run", "tag", "steps", "step", "mode", "methods", "stages": the check's steps ("original", then each layer
    randomised), "metrics", "inputs", "curves": {method: {metric: {"mean": [stages], "std": [stages]}}}}``.
    """
    c, head = _chosen(root, run, tag, SANITY, step)
    curves = {
        method: {
            metric: {"mean": floats(c.mean[method][metric]), "std": floats(c.std[method][metric])}
            for metric in c.metrics
        }
        for method in c.methods
    }
    return {
        **head,
        "mode": c.mode,
        "methods": c.methods,
        "stages": c.stages,
        "metrics": c.metrics,
        "inputs": c.inputs,
        "curves": curves,
    }


def faithfulness(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """Deletion or insertion curves of one or more methods at ``step`` (default: the last logged under the tag).

    ``{"run", "tag", "steps", "step", "metric", "probability", "inputs", "fractions", "curves": [{"method",
    "mean", "std", "auc"}]}``: per method the mean curve over the inputs, its standard deviation, its mean AUC.
    """
    c, head = _chosen(root, run, tag, FAITHFULNESS, step)
    curves = [
        {"method": method, "mean": floats(c.mean[i]), "std": floats(c.std[i]), "auc": as_float(float(c.auc[i]))}
        for i, method in enumerate(c.methods)
    ]
    return {
        **head,
        "metric": c.metric,
        "probability": c.probability,
        "inputs": c.inputs,
        "fractions": floats(c.fractions),
        "curves": curves,
    }


def method_comparison(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A method comparison table at ``step`` (default: the last logged under the tag), best method first.

    ``{"run", "tag", "steps", "step", "metrics", "sort_by", "lower_is_better": {metric: bool}, "rows":
    [{"method", "values": {metric: mean or null}, "std": {metric: spread over the inputs or null}, "error":
    why the method failed, or null}]}``; ``null`` marks a value not measured (every value of a failed method).
    """
    c, head = _chosen(root, run, tag, COMPARISON, step)

    def measured(values: np.ndarray) -> dict[str, float | str | None]:
        return {metric: None if math.isnan(v) else as_float(v) for metric, v in zip(c.metrics, values.tolist())}

    rows = [
        {"method": method, "values": measured(c.mean[i]), "std": measured(c.std[i]), "error": c.errors[i]}
        for i, method in enumerate(c.methods)
    ]
    return {
        **head,
        "metrics": c.metrics,
        "sort_by": c.sort_by,
        "lower_is_better": {metric: LOWER_IS_BETTER[metric] for metric in c.metrics},
        "rows": rows,
    }
