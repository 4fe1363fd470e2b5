"""The most confidently wrong test cases, with the explanation of each wrong prediction (seeds 000 and 003).

A model that is wrong and sure of it points at what it learned instead of the task: a mislabelled sample, a
class the data set confuses, or a shortcut (the background, a watermark). Its explanation shows which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, concat
from ..engine import run as run_job
from ..errors import BadInputError
from ..explain.base import _check_options, explain, method_class
from ..explanation import Explanation
from ..render import FigureDisplay, NotebookFigure, new_figure, overlay, to_image_array
from .classification import ClassNames, _class_names

Data = Iterable[Any] | tuple[Tensor, Tensor]


@dataclass
class ConfidentlyWrong(FigureDisplay):
    """The ``k`` misclassified samples the model was surest of, most confident first.

    Attributes:
        indices: ``[k]`` each sample's position in the data, counting across batches.
        inputs: ``[k, ...]`` the samples (CPU).
        labels: ``[k]`` their true classes.
        predictions: ``[k]`` the classes predicted.
        confidence: ``[k]`` the softmax probability of the predicted class.
        explanation: the explanation of the predicted class for these samples.
        classes: a name per class.
        wrong: how many samples were misclassified, of ``total``.
    """

    indices: Tensor
    inputs: Tensor
    labels: Tensor
    predictions: Tensor
    confidence: Tensor
    explanation: Explanation
    classes: list[str]
    wrong: int
    total: int

    def titles(self) -> list[str]:
        """``"true: x / predicted: y (p=0.97)"`` for each sample."""
        return [
            f"true: {self.classes[int(t)]} / predicted: {self.classes[int(p)]} (p={float(c):.2f})"
            for t, p, c in zip(self.labels, self.predictions, self.confidence, strict=True)
        ]

    def figure(self, columns: int = 4, cmap: str | None = None, alpha: float = 0.5) -> NotebookFigure:
        """A gallery: each sample's image and the explanation's overlay side by side, titled with its classes."""

        n = len(self.indices)
        columns = max(1, min(columns, n))
        rows = max(1, -(-n // columns))
        figure = new_figure(3.4 * columns, 2.0 * rows + 0.3)
        panels = figure.subfigures(rows, columns, squeeze=False)
        for panel in panels.flat[n:]:
            panel.set_visible(False)
        for i, (panel, title) in enumerate(zip(panels.flat, self.titles())):
            image, heatmap = self.inputs[i], self.explanation.heatmap[i]
            left, right = panel.subplots(1, 2)
            left.imshow(to_image_array(image))
            right.imshow(overlay(image, heatmap, cmap=cmap, alpha=alpha))
            left.set_title(f"sample {int(self.indices[i])}", fontsize=7)
            right.set_title(self.explanation.method, fontsize=7)
            for ax in (left, right):
                ax.set_xticks([])
                ax.set_yticks([])
            panel.suptitle(title.replace(" / ", "\n"), fontsize=8)
        figure.suptitle(f"{self.wrong} of {self.total} misclassified; the {n} most confident", fontsize=10)
        return figure


def confidently_wrong(
    model: nn.Module,
    data: Data,
    k: int = 16,
    method: str = "gradcam",
    classes: ClassNames = None,
    options: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    engine: Engine | None = None,
    input_column: str = "image",
    label_column: str = "label",
    ray: RayOptions | None = None,
) -> ConfidentlyWrong:
    """The ``k`` most confidently misclassified samples of ``data`` and ``method``'s explanation of each.

    The data are streamed through the model under ``torch.no_grad`` (a tqdm bar); only the ``k`` best
    candidates so far are kept, so any size of test set fits in memory. Confidence is the softmax probability of
    the predicted class; ties go to the earlier sample. The explanation explains the predicted (wrong) class:
    what made the model so sure.

    Args:
        model: a classifier returning ``[B, K]`` scores, run as given (call ``model.eval()``).
        data: ``(inputs, labels)`` tensors, a DataLoader yielding ``(inputs, labels, ...)`` batches, or a
            ``ray.data.Dataset`` with ``image`` and ``label`` columns.
        k: how many samples to return (fewer when fewer are wrong).
        method: a name from ``ds.methods()``.
        classes: the number of classes or their names (default: the model's outputs, named by index).
        options: ``ds.explain`` options for the method (a ``"layer"`` key is passed as ``layer=``).
        batch_size: rows per forward pass when ``data`` are tensors.
        progress: show a progress bar; ``None`` shows it on a terminal only.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``
            (:mod:`deepscope.engine`); the explanation of the ``k`` samples runs in this process.
        input_column, label_column: the Ray data set's columns.
        ray: more Ray options (:class:`~deepscope.engine.RayOptions`).

    Returns:
        A :class:`ConfidentlyWrong` (``indices``, ``confidence``, ``explanation``, ``figure()`` gallery).
    """
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
    for name, value in (("k", k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name}={value!r} must be a positive int.")
    options = dict(options or {})
    layer = options.pop("layer", None)
    _check_options(method_class(method), options)
    job = Job(
        map=partial(wrong_rows, k=k),
        merge=partial(merge_wrong, k=k),
        desc="finding errors",
        batch_size=batch_size,
        labels=True,
    )
    ray_options = replace(ray or RayOptions(), input_column=input_column, label_column=label_column)
    rows = run_job(job, model, data, engine, progress, ray=ray_options)
    summary = rows["id"] < 0
    seen, wrong = int(rows["seen"][summary].sum()), int(rows["wrong"][summary].sum())
    if seen == 0:
        raise BadInputError("the data yielded no samples.")
    best = {key: torch.from_numpy(value[~summary]) for key, value in rows.items()}
    if not len(best["id"]):
        raise BadInputError(f"the model classifies all {seen} samples correctly; there is nothing wrong to show.")
    outputs = int(rows["outputs"][0])
    best = {
        "indices": best["id"].long(),
        "inputs": best["input"],
        "labels": best["label"].long(),
        "predictions": best["prediction"].long(),
        "confidence": best["confidence"],
    }
    names = _class_names(classes if classes is not None else outputs, outputs)
    device = probe.model_device(model)
    e = explain(model, best["inputs"].to(device), method=method, target=best["predictions"], layer=layer, **options)
    return ConfidentlyWrong(explanation=e, classes=names, wrong=wrong, total=seen, **best)


def wrong_rows(model: nn.Module, batch: Batch, k: int) -> Rows:
    """The map of :func:`confidently_wrong`: the batch's ``k`` most confident misses, and one summary row
    (``id`` -1) that counts the batch's samples and misses."""
    labels = batch.labels
    assert labels is not None  # the job asks for labels: the engine checked
    output = probe.run(model, batch.inputs.to(probe.model_device(model)))
    if output.ndim != 2 or len(output) != len(labels):
        raise BadInputError(f"the model returned {tuple(output.shape)} for {len(labels)} labels; want [B, K].")
    confidence, predictions = output.float().softmax(dim=1).max(dim=1)
    confidence, predictions = confidence.cpu(), predictions.cpu()
    miss = (predictions != labels).numpy()
    inputs = batch.inputs.detach().cpu().numpy()
    count = int(miss.sum())
    rows: Rows = {
        "id": np.r_[-1, batch.ids.numpy()[miss]],
        "input": np.concatenate([np.zeros_like(inputs[:1]), inputs[miss]]),
        "label": np.r_[-1, labels.numpy()[miss]],
        "prediction": np.r_[-1, predictions.numpy()[miss]],
        "confidence": np.r_[np.float32(np.inf), confidence.numpy()[miss]].astype(np.float32),
        "seen": np.r_[len(labels), np.zeros(count, dtype=np.int64)],
        "wrong": np.r_[count, np.zeros(count, dtype=np.int64)],
        "outputs": np.full(count + 1, output.shape[1]),
    }
    return merge_wrong(None, rows, k)


def merge_wrong(merged: Rows | None, rows: Rows, k: int) -> Rows:
    """The merge of :func:`confidently_wrong`: the summary rows added up into one, and the ``k`` most confident
    misses of both, by confidence, then by the earlier index (a stable sort of both: the same in any order)."""
    both = concat(merged, rows)
    summary = both["id"] < 0
    first = int(np.nonzero(summary)[0][0])
    total = {key: value[first : first + 1].copy() for key, value in both.items()}
    total["seen"][0], total["wrong"][0] = both["seen"][summary].sum(), both["wrong"][summary].sum()
    misses = {key: value[~summary] for key, value in both.items()}
    order = np.lexsort((misses["id"], -misses["confidence"]))[:k]
    return {key: np.concatenate([total[key], misses[key][order]]) for key in both}
