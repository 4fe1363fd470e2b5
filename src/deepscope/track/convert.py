"""Records from what users log: the result objects of the rest of deepscope (what ``Run.log_confusion_matrix``,
``log_pr_curve``, ``log_explanations``, ``log_sanity_check``, ``log_faithfulness`` and ``log_method_comparison``
store) and pictures (matplotlib figures, PIL images, image tensors and arrays).

:func:`records` is the one place that decides which record kind a value of ``run.log({tag: value})`` becomes
(:data:`LOGGABLE`); numbers never reach it (``run.log`` keeps them on its fast path). The evaluation and
explanation code knows nothing of the store; these functions read their results' public attributes and return
plain records (:mod:`deepscope.track.records`), checked before any picture is drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import BadInputError
from .records import (
    ComparisonTable,
    Confusion,
    ExplanationSet,
    FaithfulnessCurves,
    Image,
    PRCurve,
    Record,
    SanityCurves,
)

if TYPE_CHECKING:
    from ..evaluate.classification import BinaryReport, ConfusionMatrix, OneVsRest
    from ..evaluate.comparison import MethodComparison
    from ..evaluate.faithfulness import Faithfulness
    from ..evaluate.sanity import SanityCheck
    from ..explanation import Explanation


def confusion(matrix: ConfusionMatrix, tag: str = "confusion_matrix", step: int = 0) -> Confusion:
    """The record of a :class:`deepscope.evaluate.ConfusionMatrix` (its counts and class names)."""
    counts = getattr(matrix, "counts", None)
    classes = getattr(matrix, "classes", None)
    if counts is None or classes is None:
        raise BadInputError(
            f"{tag!r}: expected a deepscope.evaluate.ConfusionMatrix (from confusion_matrix or evaluate_model), "
            f"not {type(matrix).__name__}"
        )
    return Confusion(tag, step, _array(counts), [str(c) for c in classes])


def pr_curves(
    report: BinaryReport | OneVsRest, tag: str = "pr_curve", step: int = 0, num_thresholds: int = 127
) -> list[PRCurve]:
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


def explanation_set(
    explanations: Explanation | Sequence[Explanation],
    labels: Any = None,
    predictions: Any = None,
    classes: Sequence[str] | None = None,
    tag: str = "explanations",
    step: int = 0,
    cmap: str | None = None,
    alpha: float = 0.5,
) -> ExplanationSet:
    """The record of one or more :class:`deepscope.Explanation` objects of the same images (methods side by side).

    Args:
        explanations: what ``ds.explain`` returned, for one method or several methods on the same inputs.
        labels: the true class of each input: ``N`` class indices (tensor, array, list) or ``N`` names.
        predictions: the model's class for each input: ``N`` indices or names, or ``[N, K]`` scores (argmax).
        classes: class names, to show indices (labels, predictions, explained classes) by name.
        cmap, alpha: how heatmaps are coloured and laid over the inputs (:func:`deepscope.render.overlay`).

    Raises:
        BadInputError: no explanations, explanations of different inputs, inputs that are not images, or labels
            or predictions not one per input.
    """
    from .. import render

    group = [explanations] if not isinstance(explanations, Sequence) else list(explanations)
    if not group or not all(hasattr(e, "heatmap") and hasattr(e, "inputs") for e in group):
        raise BadInputError(f"{tag!r}: pass what ds.explain returns (one Explanation or a list of them)")
    first = group[0]
    inputs = first.inputs
    if inputs.ndim != 4 or inputs.shape[1] not in (1, 3):
        raise BadInputError(
            f"{tag!r}: the explanation gallery shows images [N, 1 or 3, H, W]; these inputs are {list(inputs.shape)}"
        )
    n = inputs.shape[0]
    for e in group[1:]:
        if e.inputs.shape != inputs.shape or not torch.equal(e.inputs, inputs):
            raise BadInputError(
                f"{tag!r}: {e.method} explains other inputs than {first.method}; log explanations of the same "
                "images together, others under another tag"
            )
    for e in group:
        if tuple(e.heatmap.shape) != (n, *inputs.shape[2:]):
            raise BadInputError(f"{tag!r}: {e.method}'s heatmap is {list(e.heatmap.shape)}, not [N, H, W]")
    names = None if classes is None else [str(c) for c in classes]
    true = None if labels is None else _class_names(labels, n, names, "labels", tag)
    predicted = None if predictions is None else _class_names(predictions, n, names, "predictions", tag)
    targets = [_targets(e, names) for e in group]
    pictures = [_uint8(render.to_image_array(inputs[i])) for i in range(n)]
    heatmaps = [[_uint8(render.colorize(e.heatmap[i], cmap)) for i in range(n)] for e in group]
    overlays = [[np.asarray(render.overlay(inputs[i], e.heatmap[i], cmap, alpha)) for i in range(n)] for e in group]
    return ExplanationSet(
        tag,
        step,
        inputs=np.stack(pictures),
        methods=[e.method for e in group],
        heatmaps=np.stack([np.stack(row) for row in heatmaps]),
        overlays=np.stack([np.stack(row) for row in overlays]),
        targets=targets,
        scores=np.stack([e.scores.detach().cpu().numpy().astype(np.float64).reshape(n) for e in group]),
        labels=true,
        predictions=predicted,
    )


def sanity_curves(check: SanityCheck, tag: str = "sanity_check", step: int = 0) -> SanityCurves:
    """The record of a :class:`deepscope.evaluate.SanityCheck`: per method and metric, the mean and standard
    deviation over the inputs of the similarity at each step (what ``check.figure()`` draws), without the maps."""
    scores = getattr(check, "scores", None)
    methods, stages = getattr(check, "methods", None), getattr(check, "steps", None)
    if not isinstance(scores, Mapping) or methods is None or stages is None or not hasattr(check, "mode"):
        raise BadInputError(
            f"{tag!r}: expected a deepscope.evaluate.SanityCheck (from sanity_check or data_randomization_check), "
            f"not {type(check).__name__}"
        )
    mean: dict[str, dict[str, np.ndarray]] = {}
    std: dict[str, dict[str, np.ndarray]] = {}
    metrics: list[str] = []
    for method in methods:
        per_metric = {str(metric): _array(values).astype(np.float64) for metric, values in scores[method].items()}
        metrics = metrics or list(per_metric)
        if list(per_metric) != metrics or any(a.ndim != 2 or len(a) != len(stages) for a in per_metric.values()):
            raise BadInputError(f"{tag!r}: {method}'s scores are not [steps, N] for the metrics {metrics}")
        mean[str(method)] = {metric: a.mean(axis=1) for metric, a in per_metric.items()}
        std[str(method)] = {metric: a.std(axis=1) for metric, a in per_metric.items()}
    inputs = next(iter(scores[methods[0]].values())).shape[1] if methods and metrics else 0
    return SanityCurves(
        tag, step, str(check.mode), [str(m) for m in methods], [str(s) for s in stages], metrics, mean, std, inputs
    )


def faithfulness_curves(
    results: Faithfulness | Sequence[Faithfulness] | Mapping[str, Faithfulness],
    tag: str = "faithfulness",
    step: int = 0,
) -> FaithfulnessCurves:
    """The record of :func:`deepscope.faithfulness` results of one metric on the same inputs, methods side by side:
    each one's mean curve, its standard deviation over the inputs and its mean AUC.

    ``results``: one result, a list of them (named by their ``method``), or a dict of name -> result (for results
    of heatmaps, which carry no method name).

    Raises:
        BadInputError: no results, results of different metrics, step counts or numbers of inputs, or results
            without a name.
    """
    named: list[tuple[str | None, Faithfulness]]
    if isinstance(results, Mapping):
        named = [(str(name), r) for name, r in results.items()]
    else:
        group = [results] if not isinstance(results, Sequence) else list(results)
        named = [(getattr(r, "method", None), r) for r in group]
    if not named or not all(hasattr(r, "curves") and hasattr(r, "auc") for _, r in named):
        raise BadInputError(f"{tag!r}: pass what ds.faithfulness returns (one result, a list, or a dict of them)")
    unnamed = [i for i, (name, _) in enumerate(named) if not name]
    if unnamed:
        raise BadInputError(
            f"{tag!r}: results {unnamed} have no method name (they measured a heatmap); pass a dict name -> result"
        )
    first = named[0][1]
    curves = [_array(r.curves).astype(np.float64) for _, r in named]
    fractions = _array(first.fractions).astype(np.float64)
    for (name, r), c in zip(named, curves):
        if r.metric != first.metric or c.shape != curves[0].shape or c.ndim != 2:
            raise BadInputError(
                f"{tag!r}: {name} is {r.metric} {list(c.shape)}, {named[0][0]} {first.metric} "
                f"{list(curves[0].shape)}; log one metric, steps and inputs together, others under another tag"
            )
    return FaithfulnessCurves(
        tag,
        step,
        metric=str(first.metric),
        methods=[str(name) for name, _ in named],
        fractions=fractions,
        mean=np.stack([c.mean(axis=0) for c in curves]),
        std=np.stack([c.std(axis=0) for c in curves]),
        auc=np.array([float(r.auc.mean()) for _, r in named]),  # the result's own mean AUC, as its figure titles
        inputs=int(curves[0].shape[0]),
        probability=bool(getattr(first, "probability", True)),
    )


def comparison_table(comparison: MethodComparison, tag: str = "method_comparison", step: int = 0) -> ComparisonTable:
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
            float(_array(aucs[row.method][m]).astype(np.float64).std()) if m in aucs.get(row.method, {}) else nan
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


# ---- what run.log accepts besides numbers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Loggable:
    """Types ``run.log`` accepts, named ``(module, class)``, and the records a value of them becomes.

    A class is looked up in ``sys.modules`` without importing its module: a value of a class whose module was never
    imported cannot exist, and so logging numbers never pays for importing matplotlib or deepscope's evaluation code.
    """

    classes: tuple[tuple[str, str], ...]
    description: str  # what the error for an unknown value lists
    records: Callable[[Any, str, int], list[Record]]  # (value, tag, step) -> records

    def accepts(self, value: object) -> bool:
        for module_name, name in self.classes:
            module = sys.modules.get(module_name)
            if module is not None and isinstance(value, getattr(module, name)):
                return True
        return False


def figure_image(figure: Any, tag: str = "figure", step: int = 0) -> Image:
    """The :class:`Image` record of a ``matplotlib.figure.Figure``, drawn at its own size and dpi.

    The figure is drawn by a ``FigureCanvasAgg`` of its own and then given its canvas back (a notebook's, a
    window's), as ``savefig`` does: pyplot and the backend are never touched.
    """
    from ..render import figure_rgba

    rgba = figure_rgba(figure)
    return Image(tag, step, rgba[:, :, :3] if (rgba[:, :, 3] == 255).all() else rgba)


def pil_image(image: Any, tag: str = "image", step: int = 0) -> Image:
    """The :class:`Image` record of a PIL image: grey, RGB and RGBA as they are, other modes as RGB (RGBA if they
    have transparency)."""
    if image.mode not in ("L", "RGB", "RGBA"):
        transparent = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    return Image(tag, step, np.asarray(image))


def array_image(array: Any, tag: str = "image", step: int = 0) -> Image:
    """The :class:`Image` record of an image tensor or array: ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` with
    ``C`` = 1, 3 or 4, uint8 or float in [0, 1].

    A ``[C, H, W]`` that could also be ``[H, W, C]`` (``[3, 8, 3]``) is read as each library's convention has it:
    a torch tensor channels first, a NumPy array channels last.
    """
    is_tensor = isinstance(array, torch.Tensor)
    if is_tensor:
        tensor = array.detach()
        pixels = (tensor.float() if tensor.is_floating_point() else tensor).cpu().numpy()
    else:
        pixels = np.asarray(array)
    shape = pixels.shape
    first = pixels.ndim == 3 and shape[0] in (1, 3, 4)
    last = pixels.ndim == 3 and shape[2] in (1, 3, 4)
    if pixels.ndim == 3 and first and (is_tensor or not last):
        pixels = np.moveaxis(pixels, 0, -1)
    elif not (pixels.ndim == 2 or last):
        raise BadInputError(
            f"{tag!r}: run.log stores a {type(array).__name__} of more than one element as an image, [H, W], "
            f"[C, H, W] or [H, W, C] with C = 1, 3 or 4 channels; this one has shape {list(shape)}. Reduce it to "
            "one number (.mean(), .norm()) to log a scalar; log one image of a batch (x[0]) or a grid of them "
            "(torchvision.utils.make_grid)"
        )
    return Image(tag, step, pixels)


_CLASSIFICATION = "deepscope.evaluate.classification"

LOGGABLE: tuple[Loggable, ...] = (
    Loggable((("matplotlib.figure", "Figure"),), "matplotlib Figures", lambda v, t, s: [figure_image(v, t, s)]),
    Loggable((("PIL.Image", "Image"),), "PIL images", lambda v, t, s: [pil_image(v, t, s)]),
    Loggable(
        (("torch", "Tensor"), ("numpy", "ndarray")),
        "image tensors and arrays ([H, W], [C, H, W] or [H, W, C], C = 1, 3, 4; uint8 or float in [0, 1])",
        lambda v, t, s: [array_image(v, t, s)],
    ),
    Loggable(
        (("deepscope.explanation", "Explanation"),),
        "ds.explain's Explanation (the explanations gallery)",
        lambda v, t, s: [explanation_set(v, tag=t, step=s)],
    ),
    Loggable(((_CLASSIFICATION, "ConfusionMatrix"),), "ConfusionMatrix", lambda v, t, s: [confusion(v, t, s)]),
    Loggable(
        ((_CLASSIFICATION, "BinaryReport"), (_CLASSIFICATION, "OneVsRest")),
        "binary_report's BinaryReport or OneVsRest (PR curves)",
        lambda v, t, s: list(pr_curves(v, t, s)),
    ),
    Loggable((("deepscope.evaluate.sanity", "SanityCheck"),), "SanityCheck", lambda v, t, s: [sanity_curves(v, t, s)]),
    Loggable(
        (("deepscope.evaluate.faithfulness", "Faithfulness"),),
        "Faithfulness",
        lambda v, t, s: [faithfulness_curves(v, t, s)],
    ),
    Loggable(
        (("deepscope.evaluate.comparison", "MethodComparison"),),
        "MethodComparison",
        lambda v, t, s: [comparison_table(v, t, s)],
    ),
    Loggable((("deepscope.embed.extract", "Features"),), "ds.embed's Features", lambda v, t, s: [v.to_record(t, s)]),
    Loggable(
        (
            ("deepscope.features.filters", "Filters"),
            ("deepscope.features.patches", "TopPatches"),
            ("deepscope.features.maximize", "Maximization"),
        ),
        "Filters, TopPatches, Maximization (their to_records)",
        lambda v, t, s: list(v.to_records(t, s)),
    ),
)


def records(tag: str, value: object, step: int = 0) -> list[Record]:
    """The records ``run.log({tag: value}, step=step)`` stores for a value that is not a number (:data:`LOGGABLE`).

    Raises:
        BadInputError: a value of another type (the message lists what ``run.log`` takes), or one of these types
            that cannot be stored (an image of the wrong shape, explanations of inputs that are not images).
    """
    for loggable in LOGGABLE:
        if loggable.accepts(value):
            return loggable.records(value, tag, step)
    kinds = "; ".join(loggable.description for loggable in LOGGABLE)
    raise BadInputError(
        f"{tag!r}: cannot log a {type(value).__name__} ({value!r:.60}). run.log takes numbers (Python or NumPy "
        f"numbers, one-element tensors); {kinds}. Text goes to run.note"
    )


# ---- helpers ----------------------------------------------------------------------------------------------------


def _array(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _pr_curve(report: BinaryReport, tag: str, step: int, num_thresholds: int) -> PRCurve:
    labels = _array(getattr(report, "labels", None)).reshape(-1)
    scores = _array(getattr(report, "scores", None)).astype(np.float64).reshape(-1)
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


def _class_names(values: Any, n: int, names: list[str] | None, what: str, tag: str) -> list[str]:
    """``N`` class names from indices, names, or ``[N, K]`` scores."""
    if isinstance(values, Sequence) and not isinstance(values, str) and all(isinstance(v, str) for v in values):
        found = list(values)
    else:
        array = _array(values)
        if array.ndim == 2 and array.dtype.kind == "f":
            array = array.argmax(axis=1)
        if array.ndim != 1 or array.dtype.kind not in "iub":
            raise BadInputError(f"{tag!r}: {what} are N class indices, N names or [N, K] scores, not {array.shape}")
        indices = array.astype(np.int64).tolist()
        if names is not None and any(not 0 <= k < len(names) for k in indices):
            raise BadInputError(f"{tag!r}: {what} hold a class outside 0..{len(names) - 1} ({len(names)} classes)")
        found = [names[k] if names is not None else str(k) for k in indices]
    if len(found) != n:
        raise BadInputError(f"{tag!r}: {len(found)} {what} for {n} inputs; give one per input")
    return found


def _targets(explanation: Explanation, names: list[str] | None) -> list[str]:
    """What each input's map explains, a class shown by name where ``names`` has it."""
    if explanation.targets is not None and names is not None:
        return [names[k] if 0 <= k < len(names) else str(k) for k in explanation.targets.tolist()]
    return [str(label) for label in explanation.labels]
