"""Faithfulness of an explanation: the deletion and insertion curves of Petsiuk et al. 2018 (RISE).

Deletion removes the input's elements in the order of the explanation's heatmap, most important first, and
watches the target's probability fall: a faithful map makes it fall fast (low area under the curve). Insertion
starts from a baseline (a blurred copy) and puts the elements back in the same order: a faithful map makes the
probability rise fast (high area).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError
from ..explain.gradients import make_baseline
from ..explanation import Explanation
from ..render import FigureDisplay, NotebookFigure, new_figure
from ..targets import ClassScore, Probability, Target, TargetSpec

# A progress bar appears from this many batches on (and only on a terminal: tqdm's disable=None).
_PROGRESS_FROM = 8


@dataclass
class Faithfulness(FigureDisplay):
    """Deletion or insertion curves of one explanation.

    Attributes:
        metric: ``"deletion"`` or ``"insertion"``.
        curves: ``[N, steps + 1]`` the target's probability (or score) after each step; column 0 is the clean
            input (deletion) or the baseline (insertion).
        auc: ``[N]`` area under each curve, x running over the fraction of elements changed, in [0, 1].
        fractions: ``[steps + 1]`` that fraction at each step.
        targets: the class measured per input, ``None`` for a callable target.
        method: the explanation's method, when given an :class:`Explanation`.
        probability: whether the curves are softmax probabilities (else raw scores).
    """

    metric: str
    curves: Tensor
    auc: Tensor
    fractions: Tensor
    targets: Tensor | None = None
    method: str | None = None
    probability: bool = True

    def figure(self) -> NotebookFigure:
        """Every input's curve (thin) and their mean (bold), with the mean AUC in the title."""
        figure = new_figure(5, 3.8)
        ax = figure.subplots()
        x = self.fractions.numpy()
        for curve in self.curves.numpy():
            ax.plot(x, curve, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(x, self.curves.mean(dim=0).numpy(), color="tab:blue", linewidth=2.5, label="mean")
        changed = "removed" if self.metric == "deletion" else "inserted"
        label = f"{self.method} " if self.method else ""
        measured = "target probability" if self.probability else "target score"
        ax.set(xlabel=f"fraction of elements {changed}", ylabel=measured, xlim=(0, 1))
        ax.set_title(f"{label}{self.metric}: AUC {float(self.auc.mean()):.3f} (mean of {len(self.auc)})")
        ax.legend(fontsize=8)
        return figure


def _check(model: object, inputs: object, heatmap: Tensor, steps: object, batch_size: object, metric: str) -> None:
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim < 2 or not len(inputs):
        raise BadInputError("inputs must be a non-empty floating-point tensor batch (N first).")
    if metric not in ("deletion", "insertion"):
        raise BadInputError(f"metric={metric!r} is not 'deletion' or 'insertion'.")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name}={value!r} must be a positive int.")
    expected = (inputs.shape[0], *(inputs.shape[2:] if inputs.ndim > 2 else inputs.shape[1:]))
    if tuple(heatmap.shape) != expected:
        raise BadInputError(
            f"the heatmap has shape {tuple(heatmap.shape)} but inputs {tuple(inputs.shape)} need {expected} "
            "(one value per input position, channels shared); explain these inputs, or resize the map."
        )
    if not torch.isfinite(heatmap).all():
        raise BadInputError("the heatmap contains NaN or infinite values.")


def faithfulness(
    model: nn.Module,
    inputs: Tensor,
    explanation: Explanation | Tensor,
    metric: Literal["deletion", "insertion"] = "deletion",
    steps: int = 100,
    baseline: float | str | Tensor | None = None,
    batch_size: int = 64,
    target: TargetSpec = None,
    probability: bool = True,
    progress: bool | None = None,
) -> Faithfulness:
    """The deletion or insertion curve of an explanation, and its area (Petsiuk et al. 2018).

    The input positions are ranked by the heatmap, highest first (all channels of a position together). In
    ``steps`` equal chunks they are replaced by the baseline (deletion) or copied from the input into the
    baseline (insertion), and the target's probability is measured after each step. All steps of all inputs go
    through the model in batches of ``batch_size`` rows, under ``torch.no_grad``; the model is not changed.

    Args:
        model: the classifier the explanation explains (left as found: call ``model.eval()`` first).
        inputs: the explained batch ``[N, C, H, W]`` (or ``[N, C, L]``, ``[N, F]``).
        explanation: an :class:`Explanation` of these inputs, or a heatmap ``[N, H, W]`` (``[N, *spatial]``).
        metric: ``"deletion"`` (lower AUC = more faithful) or ``"insertion"`` (higher AUC = more faithful).
        steps: the number of chunks; the curve has ``steps + 1`` points.
        baseline: what removed elements become: a number, ``"mean"``, ``"blur"`` or a tensor; default 0 for
            deletion and ``"blur"`` for insertion, as in the paper.
        batch_size: rows per forward pass.
        target: what to measure when ``explanation`` is a tensor (or has no classes): any target of
            ``ds.explain`` (None for the predicted class, an int, one per input, a callable output -> one scalar per
            input, ``ds.probability(...)``, a ``ds.Unit`` or an objective). An :class:`Explanation`'s own
            ``targets`` are used otherwise.
        probability: measure a class target (None, an int, one per input) as its softmax probability
            (``ds.probability(target)``); ``False`` measures its raw score. Other targets are measured as they are.
        progress: show a tqdm bar; ``None`` shows it for long runs on a terminal.

    Returns:
        A :class:`Faithfulness` with ``curves`` ``[N, steps + 1]`` and ``auc`` ``[N]`` (trapezoid rule).
    """
    if isinstance(explanation, Explanation):
        heatmap, method = explanation.heatmap, explanation.method
        if target is None and explanation.targets is not None:
            target = explanation.targets
    elif isinstance(explanation, Tensor):
        heatmap, method = explanation, None
    else:
        kind = type(explanation).__name__
        raise BadInputError(f"explanation must be an Explanation or a heatmap tensor, not {kind}.")
    _check(model, inputs, heatmap, steps, batch_size, metric)
    resolved = Target(target, inputs.shape[0])
    if probability and isinstance(resolved.objective, ClassScore):  # a class is measured as its probability
        resolved.measure_probability()
    device = probe.model_device(model)
    x = inputs.detach().to(device)
    if baseline is None:
        baseline = 0.0 if metric == "deletion" else "blur"
    base = make_baseline(baseline, x)

    n = x.shape[0]
    # [N, C, positions]: the channels of a position are removed together.
    flat_x = x.reshape(n, x.shape[1], -1) if x.ndim > 2 else x[:, None]
    flat_base = base.reshape(flat_x.shape)
    positions = flat_x.shape[-1]
    # rank[i, p] = where position p comes in image i's order (0 = most important).
    order = heatmap.detach().reshape(n, -1).float().to(device).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(positions, device=device).expand(n, -1))
    changed = torch.linspace(0, positions, steps + 1, device=device).round().long()
    start, end = (flat_base, flat_x) if metric == "insertion" else (flat_x, flat_base)

    rows = n * (steps + 1)
    values = torch.empty(rows, dtype=torch.float32)
    batches = -(-rows // batch_size)
    disable = (not progress) if progress is not None else (None if batches >= _PROGRESS_FROM else True)
    with torch.no_grad(), tqdm(total=batches, desc=metric, unit="batch", disable=disable, leave=False) as bar:
        run = functools.partial(probe.run, model)
        resolved.forward(model, run, x)  # binds a predicted-class target on the clean inputs
        for first in range(0, rows, batch_size):
            # Rows are (input, step) pairs, input-major.
            index = torch.arange(first, min(first + batch_size, rows), device=device)
            image, step = index // (steps + 1), index % (steps + 1)
            mask = (rank[image] < changed[step][:, None])[:, None]
            batch = torch.where(mask, end[image], start[image]).reshape(len(index), *x.shape[1:])
            scores, _ = resolved.forward(model, run, batch, of=image)
            values[first : first + len(index)] = scores.float().cpu()
            bar.update()
    curves = values.reshape(n, steps + 1)
    return Faithfulness(
        metric=metric,
        curves=curves,
        auc=torch.trapezoid(curves, dx=1.0 / steps, dim=1),
        fractions=torch.linspace(0, 1, steps + 1),
        targets=resolved.classes,
        method=method,
        probability=isinstance(resolved.objective, Probability),
    )
