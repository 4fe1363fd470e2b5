"""Classifier performance: confusion matrices, ROC / PR curves and score distributions (seed 000).

Everything is computed with torch/numpy; scikit-learn is the reference in the tests, not a dependency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, concat, in_id_order, is_ray_dataset
from ..engine import run as run_job
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ClassNames = int | Sequence[str] | None


def _as_array(values: object, what: str) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"{what} cannot be read as an array: {error}.") from None


def _labels(values: object, what: str) -> np.ndarray:
    """Class indices ``[N]``; ``[N, K]`` scores are reduced to their argmax (the predicted class)."""
    array = _as_array(values, what)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2 and array.dtype.kind == "f":
        array = array.argmax(axis=1)
    if array.ndim != 1 or not array.size:
        raise BadInputError(f"{what} has shape {array.shape}; pass one class index per sample, shape (N,), N > 0.")
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise BadInputError(f"{what} holds non-integer values; pass class indices (or [N, K] scores).")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise BadInputError(f"{what} has dtype {array.dtype}; pass integer class indices.")
    if array.size and array.min() < 0:
        raise BadInputError(f"{what} holds the negative class {array.min()}; classes are 0..K-1.")
    return array.astype(np.int64)


def _class_names(classes: ClassNames, seen: int) -> list[str]:
    if classes is None:
        return [str(k) for k in range(seen)]
    if isinstance(classes, int) and not isinstance(classes, bool):
        if classes < seen:
            raise BadInputError(f"classes={classes}, but the labels go up to {seen - 1}; pass classes >= {seen}.")
        return [str(k) for k in range(classes)]
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise BadInputError("classes must be a number of classes or a list of class names.")
    names = [str(c) for c in classes]
    if len(names) < seen:
        raise BadInputError(f"{len(names)} class names given, but the labels go up to {seen - 1}.")
    return names


# Confusion matrix --------------------------------------------------------------------------------------------


@dataclass
class ConfusionMatrix(FigureDisplay):
    """Counts of (true class, predicted class) pairs.

    Attributes:
        counts: ``[K, K]`` long tensor; row = true class, column = predicted class.
        classes: a name per class.
        labels: the true classes ``[N]`` when built from a model (``evaluate_model``), else ``None``.
        scores: the softmax probabilities ``[N, K]`` when built from a model, else ``None``; pass them with
            ``labels`` to :func:`binary_report`.
    """

    counts: Tensor
    classes: list[str]
    labels: Tensor | None = None
    scores: Tensor | None = field(default=None, repr=False)

    @property
    def normalized(self) -> Tensor:
        """Row-normalised counts (each true class sums to 1; a class without samples is all zeros)."""
        counts = self.counts.double()
        totals = counts.sum(dim=1, keepdim=True)
        return torch.where(totals > 0, counts / totals.clamp(min=1), torch.zeros_like(counts))

    @property
    def accuracy(self) -> float:
        total = int(self.counts.sum())
        return float(self.counts.diagonal().sum()) / total if total else 0.0

    @property
    def most_confused(self) -> list[tuple[str, str, int]]:
        """Off-diagonal pairs ``(true, predicted, count)`` with a count > 0, the most frequent first."""
        off = self.counts.clone()
        off.fill_diagonal_(0)
        pairs = [(self.classes[t], self.classes[p], int(off[t, p])) for t, p in zip(*torch.nonzero(off, as_tuple=True))]
        return sorted(pairs, key=lambda pair: -pair[2])

    def figure(self, normalize: bool = False, cmap: str = "Blues") -> NotebookFigure:
        """The matrix colour coded, the count (or row fraction with ``normalize``) written in each cell."""
        values = (self.normalized if normalize else self.counts).numpy()
        k = len(self.classes)
        side = min(max(3.0, 0.55 * k + 1.5), 14.0)
        figure = new_figure(side + 1.0, side)
        ax = figure.subplots()
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1 if normalize else max(1, int(values.max())))
        figure.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(k), self.classes, rotation=45, ha="right")
        ax.set_yticks(range(k), self.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"accuracy {self.accuracy:.3f}" + (" (rows normalised)" if normalize else ""))
        if k <= 30:  # beyond that the numbers are unreadable
            threshold = (1 if normalize else values.max()) / 2
            for t in range(k):
                for p in range(k):
                    text = f"{values[t, p]:.2f}" if normalize else str(int(values[t, p]))
                    colour = "white" if values[t, p] > threshold else "black"
                    ax.text(p, t, text, ha="center", va="center", color=colour, fontsize=8)
        return figure


def confusion_matrix(y_true: object, y_pred: object, classes: ClassNames = None) -> ConfusionMatrix:
    """The confusion matrix of true against predicted classes.

    Args:
        y_true: true class indices ``[N]`` (tensor, array or list).
        y_pred: predicted class indices ``[N]``, or scores ``[N, K]`` (their argmax is the prediction).
        classes: the number of classes or their names; default: ``max(label) + 1`` classes named by index.

    Returns:
        A :class:`ConfusionMatrix` (``counts``, ``normalized``, ``accuracy``, ``most_confused``, ``figure()``).
    """
    true, pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise BadInputError(f"y_true has {true.size} samples but y_pred has {pred.size}; pass one of each per sample.")
    seen = int(max(true.max(initial=-1), pred.max(initial=-1))) + 1
    names = _class_names(classes, seen)
    k = len(names)
    counts = torch.from_numpy(np.bincount(true * k + pred, minlength=k * k).reshape(k, k)).long()
    return ConfusionMatrix(counts=counts, classes=names)


def evaluate_model(
    model: nn.Module,
    loader: Iterable[Any],
    classes: ClassNames = None,
    progress: bool | None = None,
    batch_size: int = 256,
    engine: Engine | None = None,
    input_column: str = "image",
    label_column: str = "label",
    ray: RayOptions | None = None,
) -> ConfusionMatrix:
    """Run ``model`` over a data set and build its confusion matrix (with a tqdm bar).

    Args:
        model: a classifier returning ``[B, K]`` scores; it is run as given (call ``model.eval()`` first) under
            ``torch.no_grad``, on its own device.
        loader: yields ``(inputs, labels, ...)`` batches, as a torchvision data set's DataLoader does; or
            ``(inputs, labels)`` tensors; or a ``ray.data.Dataset`` with ``image`` and ``label`` columns.
        classes: the number of classes or their names; default: the model's number of outputs.
        progress: show a progress bar; ``None`` shows it on a terminal only.
        batch_size: items per forward pass when the data are tensors or a Ray data set.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``
            (:mod:`deepscope.engine`).
        input_column, label_column: the Ray data set's columns.
        ray: more Ray options (:class:`~deepscope.engine.RayOptions`).

    Returns:
        A :class:`ConfusionMatrix` that also keeps ``labels`` and the softmax ``scores`` (in the data's order) for
        :func:`binary_report`.
    """
    if not isinstance(model, nn.Module) and not (engine == "ray" or is_ray_dataset(loader)):
        raise BadInputError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
    job = Job(map=score_rows, merge=concat, desc="evaluating", batch_size=batch_size, labels=True)
    options = replace(ray or RayOptions(), input_column=input_column, label_column=label_column)
    rows = in_id_order(run_job(job, model, loader, engine, progress, ray=options))
    all_scores, all_labels = torch.from_numpy(rows["scores"]), torch.from_numpy(rows["label"]).long()
    matrix = confusion_matrix(all_labels, all_scores.argmax(dim=1), all_scores.shape[1] if classes is None else classes)
    matrix.labels, matrix.scores = all_labels, all_scores
    return matrix


def score_rows(model: nn.Module, batch: Batch) -> Rows:
    """The map of :func:`evaluate_model`: each item's softmax scores and label, with its id."""
    output = probe.run(model, batch.inputs.to(probe.model_device(model)))
    if output.ndim != 2:
        raise BadInputError(f"the model returned shape {tuple(output.shape)}; a classifier returns [B, K].")
    assert batch.labels is not None  # the job asks for labels: the engine checked
    return {
        "id": batch.ids.numpy(),
        "scores": output.float().softmax(dim=1).cpu().numpy(),
        "label": batch.labels.numpy(),
    }


# Binary classifiers -------------------------------------------------------------------------------------------


@dataclass
class BinaryReport(FigureDisplay):
    """ROC and PR curves of one binary problem, and the metrics at a threshold.

    Curves run over the distinct scores, highest first; ``roc_thresholds[0]`` is ``inf`` (nothing predicted
    positive). ``average_precision`` is the step-wise area under the PR curve, as scikit-learn computes it.
    """

    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    auc: float
    precision_curve: np.ndarray
    recall_curve: np.ndarray
    average_precision: float
    name: str = "positive"
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / max(1, self.tp + self.fp + self.tn + self.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def at(self, threshold: float) -> BinaryReport:
        """The same curves with the metrics at another threshold (the "movable threshold")."""
        return _binary(self.labels, self.scores, threshold, self.name)

    def draw(self, axes: Sequence[Axes]) -> None:
        """Draw ROC, PR and the score distributions into three axes."""
        roc, pr, hist = axes
        fpr_t = self.fp / max(1, self.fp + self.tn)
        roc.plot(self.fpr, self.tpr, drawstyle="default")
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        roc.plot([fpr_t], [self.recall], "o", color="red")
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, AUC {self.auc:.3f}")
        pr.plot(self.recall_curve, self.precision_curve, drawstyle="steps-post")
        pr.plot([self.recall], [self.precision], "o", color="red")
        pr.set(xlabel="recall", ylabel="precision", title=f"PR, AP {self.average_precision:.3f}", ylim=(0, 1.02))
        bins = np.linspace(float(self.scores.min()), float(self.scores.max()), 40).tolist()
        hist.hist(self.scores[self.labels == 0], bins=bins, alpha=0.6, label="negative", color="tab:blue")
        hist.hist(self.scores[self.labels == 1], bins=bins, alpha=0.6, label=self.name, color="tab:orange")
        hist.axvline(self.threshold, color="red", linestyle="--")
        hist.legend(fontsize=8)
        hist.set(
            xlabel="score",
            ylabel="samples",
            title=f"threshold {self.threshold:.3g}: acc {self.accuracy:.3f}, P {self.precision:.3f}, "
            f"R {self.recall:.3f}, F1 {self.f1:.3f}",
        )
        hist.title.set_fontsize(9)

    def figure(self, threshold: float | None = None) -> NotebookFigure:
        """ROC, PR and both classes' score distributions with the threshold marked, in one figure."""
        report = self if threshold is None else self.at(threshold)
        figure = new_figure(15, 4.2)
        report.draw(figure.subplots(1, 3))
        return figure


@dataclass
class OneVsRest(FigureDisplay):
    """One :class:`BinaryReport` per class (that class against all others)."""

    reports: list[BinaryReport]
    classes: list[str]

    @property
    def auc(self) -> np.ndarray:
        return np.array([r.auc for r in self.reports])

    @property
    def average_precision(self) -> np.ndarray:
        return np.array([r.average_precision for r in self.reports])

    def figure(self) -> NotebookFigure:
        """Every class's ROC and PR curve, macro averages in the titles."""
        figure = new_figure(11, 4.5)
        roc, pr = figure.subplots(1, 2)
        for name, report in zip(self.classes, self.reports):
            roc.plot(report.fpr, report.tpr, label=f"{name} ({report.auc:.2f})")
            pr.plot(report.recall_curve, report.precision_curve, drawstyle="steps-post", label=name)
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, mean AUC {self.auc.mean():.3f}")
        pr.set(xlabel="recall", ylabel="precision", title=f"PR, mean AP {self.average_precision.mean():.3f}")
        roc.legend(fontsize=7)
        return figure


def _binary(labels: np.ndarray, scores: np.ndarray, threshold: float, name: str) -> BinaryReport:
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise BadInputError(
            f"class {name!r} has {positives} positive and {negatives} negative samples; ROC and PR curves need both."
        )
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # The last index of each run of equal scores: a threshold there counts all tied samples as positive.
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], labels.size - 1]
    tps = np.cumsum(sorted_labels)[last].astype(np.float64)
    fps = (last + 1) - tps
    fpr, tpr = np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]
    precision, recall = tps / (tps + fps), tps / positives
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    return BinaryReport(
        labels=labels,
        scores=scores,
        threshold=float(threshold),
        fpr=fpr,
        tpr=tpr,
        roc_thresholds=np.r_[np.inf, sorted_scores[last]],
        auc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
        precision_curve=np.r_[1.0, precision],
        recall_curve=np.r_[0.0, recall],
        average_precision=float(np.sum(np.diff(np.r_[0.0, recall]) * precision)),
        name=name,
        tp=tp,
        fp=fp,
        tn=negatives - fp,
        fn=positives - tp,
    )


def binary_report(
    y_true: object, scores: object, threshold: float = 0.5, classes: ClassNames = None
) -> BinaryReport | OneVsRest:
    """ROC / PR curves, AUC, average precision and the metrics at ``threshold`` of a classifier's scores.

    Args:
        y_true: ``[N]`` labels: 0/1 (or bool) for a binary problem, class indices for ``[N, K]`` scores.
        scores: ``[N]`` scores of the positive class (higher = more positive; probabilities or logits), or
            ``[N, K]`` per-class scores for one-vs-rest reports.
        threshold: a sample with ``score >= threshold`` is predicted positive.
        classes: names of the classes (one-vs-rest), or the positive class's name (binary) as a 1-list.

    Returns:
        A :class:`BinaryReport` for ``[N]`` scores (``fpr``, ``tpr``, ``auc``, ``precision_curve``,
        ``recall_curve``, ``average_precision``, ``accuracy``, ``precision``, ``recall``, ``f1``, ``figure()``),
        or a :class:`OneVsRest` of one report per class for ``[N, K]`` scores.
    """
    labels = _labels(y_true, "y_true")
    values = _as_array(scores, "scores").astype(np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim not in (1, 2) or values.shape[0] != labels.size:
        raise BadInputError(
            f"scores have shape {values.shape} for {labels.size} labels; pass [N] scores for a binary problem "
            "or [N, K] for one-vs-rest."
        )
    if not np.all(np.isfinite(values)):
        raise BadInputError("scores contain NaN or infinite values.")
    if values.ndim == 1:
        if labels.size and labels.max() > 1:
            raise BadInputError("[N] scores need 0/1 labels; for several classes pass [N, K] scores.")
        name = str(classes[0]) if isinstance(classes, Sequence) and not isinstance(classes, str) else "positive"
        return _binary(labels, values, threshold, name)
    k = values.shape[1]
    if labels.size and labels.max() >= k:
        raise BadInputError(f"label {labels.max()} is out of range for {k} score columns.")
    names = _class_names(k if classes is None else classes, k)
    reports = [_binary((labels == c).astype(np.int64), values[:, c], threshold, names[c]) for c in range(k)]
    return OneVsRest(reports=reports, classes=names)
