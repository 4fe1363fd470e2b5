"""The most confidently wrong test cases, with the explanation of each wrong prediction (seeds 000 and 003).

A model that is wrong and sure of it points at what it learned instead of the task: a mislabelled sample, a
class the data set confuses, or a shortcut (the background, a watermark). Its explanation shows which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import probe
from ..batches import batches as as_batches
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
) -> ConfidentlyWrong:
    """The ``k`` most confidently misclassified samples of ``data`` and ``method``'s explanation of each.

    The data are streamed through the model under ``torch.no_grad`` (a tqdm bar); only the ``k`` best
    candidates so far are kept, so any size of test set fits in memory. Confidence is the softmax probability of
    the predicted class; ties go to the earlier sample. The explanation explains the predicted (wrong) class:
    what made the model so sure.

    Args:
        model: a classifier returning ``[B, K]`` scores, run as given (call ``model.eval()``).
        data: ``(inputs, labels)`` tensors, or a DataLoader yielding ``(inputs, labels, ...)`` batches.
        k: how many samples to return (fewer when fewer are wrong).
        method: a name from ``ds.methods()``.
        classes: the number of classes or their names (default: the model's outputs, named by index).
        options: ``ds.explain`` options for the method (a ``"layer"`` key is passed as ``layer=``).
        batch_size: rows per forward pass when ``data`` are tensors.
        progress: show a progress bar; ``None`` shows it on a terminal only.

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
    batches = as_batches(data, batch_size)

    device = probe.model_device(model)
    best: dict[str, Tensor] = {}
    seen = wrong = 0
    disable = None if progress is None else not progress
    with torch.no_grad():
        for inputs, labels in tqdm(batches, desc="finding errors", unit="batch", disable=disable, leave=False):
            if labels is None:
                raise BadInputError("the data must give labels: (inputs, labels) tensors or (inputs, labels) batches.")
            output = probe.run(model, inputs.to(device))
            if output.ndim != 2 or len(output) != len(labels):
                raise BadInputError(f"the model returned {tuple(output.shape)} for {len(labels)} labels; want [B, K].")
            confidence, predictions = output.float().softmax(dim=1).max(dim=1)
            confidence, predictions = confidence.cpu(), predictions.cpu()
            miss = predictions != labels
            wrong += int(miss.sum())
            found = {
                "indices": torch.arange(seen, seen + len(labels))[miss],
                "inputs": inputs.detach().cpu()[miss],
                "labels": labels[miss],
                "predictions": predictions[miss],
                "confidence": confidence[miss],
            }
            seen += len(labels)
            best = _keep_top(best, found, k)
    if seen == 0:
        raise BadInputError("the data yielded no samples.")
    if not best or not len(best["indices"]):
        raise BadInputError(f"the model classifies all {seen} samples correctly; there is nothing wrong to show.")
    names = _class_names(classes if classes is not None else output.shape[1], output.shape[1])
    e = explain(model, best["inputs"].to(device), method=method, target=best["predictions"], layer=layer, **options)
    return ConfidentlyWrong(explanation=e, classes=names, wrong=wrong, total=seen, **best)


def _keep_top(best: dict[str, Tensor], found: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """The ``k`` most confident of both sets, by confidence, then by earlier index (a stable sort of both)."""
    merged = {key: torch.cat([best[key], value]) if best else value for key, value in found.items()}
    # Sort by index first, then stably by confidence: equal confidences stay in index order.
    by_index = merged["indices"].argsort(stable=True)
    order = by_index[merged["confidence"][by_index].argsort(descending=True, stable=True)][:k]
    return {key: value[order] for key, value in merged.items()}
