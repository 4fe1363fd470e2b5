"""Every explanation method on one model and one batch, ranked by faithfulness and by the sanity check.

Which method to trust depends on the model: a method that is faithful for one network can be an edge detector
for another. The table puts deletion AUC, insertion AUC (Petsiuk et al. 2018) and the rank correlation kept
through cascading randomisation (Adebayo et al. 2018; its mean over the cascade's steps) side by side, with a
random map as the yardstick.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError, DeepscopeError
from ..explain.base import explain
from ..explain.base import methods as registered_methods
from ..render import NotebookFigure, TableDisplay, new_figure
from ..store.records.comparison import COMPARISON_METRICS, LOWER_IS_BETTER
from ..targets import as_target
from .faithfulness import faithfulness
from .sanity import MapFunction, _check, sanity_check

METRICS = COMPARISON_METRICS
_HEADERS = {
    "deletion": "deletion AUC ↓",
    "insertion": "insertion AUC ↑",
    "sanity": "rank corr., mean over the randomisation cascade ↓",
}


@dataclass
class MethodScore:
    """One method's row: the mean of each metric over the inputs (``None`` where not measured), or why it failed."""

    method: str
    deletion: float | None = None
    insertion: float | None = None
    sanity: float | None = None
    error: str | None = None

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


@dataclass
class MethodComparison(TableDisplay):
    """Methods ranked by ``sort_by``; methods that could not explain the model come last, with the reason.

    Attributes:
        rows: a :class:`MethodScore` per method, best first.
        metrics: the metrics measured, from ``"deletion"``, ``"insertion"``, ``"sanity"``.
        sort_by: the metric the rows are ranked by.
        aucs: ``aucs[method][metric]`` the per-input values ``[N]`` behind each mean.
    """

    rows: list[MethodScore]
    metrics: tuple[str, ...]
    sort_by: str
    aucs: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def ranking(self) -> list[str]:
        """The methods that worked, best first."""
        return [row.method for row in self.rows if row.error is None]

    @property
    def failed(self) -> dict[str, str]:
        """Method -> why it could not explain this model."""
        return {row.method: row.error for row in self.rows if row.error is not None}

    def table(self) -> list[list[str]]:
        """The header row and one row of strings per method, as shown by :meth:`figure` and in Jupyter."""
        header = ["method", *(_HEADERS[m] for m in self.metrics)]
        lines = [header]
        for row in self.rows:
            if row.error is not None:
                lines.append([row.method, *(["—"] * (len(self.metrics) - 1)), f"failed: {row.error}"])
            else:
                values = [row.value(m) for m in self.metrics]
                lines.append([row.method, *("—" if v is None else f"{v:.3f}" for v in values)])
        return lines

    def figure(self) -> NotebookFigure:
        """The table as a matplotlib figure, the sort column in bold."""
        lines = self.table()
        figure = new_figure(2.2 + 2.4 * len(self.metrics), 0.8 + 0.3 * len(lines))
        ax = figure.subplots()
        ax.axis("off")
        header = [textwrap.fill(label, 30) for label in lines[0]]  # the sanity column's label takes two lines
        table = ax.table(cellText=lines[1:], colLabels=header, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        column = 1 + self.metrics.index(self.sort_by)
        for (r, c), cell in table.get_celld().items():
            if r == 0:
                cell.set_height(2 * cell.get_height())
            if r == 0 or c == column:
                cell.set_text_props(fontweight="bold")
            if r > 0 and self.rows[r - 1].error is not None:
                cell.set_text_props(color="grey")
        ax.set_title(f"methods ranked by {self.sort_by}", fontsize=9)
        return figure

    def __str__(self) -> str:
        lines = self.table()
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def random_map(model: nn.Module, inputs: Tensor) -> Tensor:
    """A uniform random map per input (seed 0): the yardstick a faithful method must beat."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(inputs.shape[0], *inputs.shape[2:], generator=generator)


random_map.__name__ = "random"


def compare_methods(
    model: nn.Module,
    inputs: Tensor,
    methods: Sequence[str | MapFunction] | None = None,
    metrics: Sequence[str] = METRICS,
    sort_by: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    random: bool = True,
    steps: int = 50,
    batch_size: int = 256,
    baseline: float | str | Tensor | None = None,
    progress: bool | None = None,
) -> MethodComparison:
    """Explain ``inputs`` with every method and rank the methods by faithfulness and sanity.

    Every method explains the model's predicted classes. For each, the mean over the inputs of: the deletion
    AUC (``ds.faithfulness``, baseline 0: lower is more faithful), the insertion AUC (blurred baseline: higher is
    more faithful), and the Spearman rank correlation of its maps with the original maps, averaged over the steps
    of a cascading randomisation from the top layer down to the first (``ds.sanity_check``, then
    :meth:`SanityCheck.mean_over_steps`: lower means the maps depend on the weights; near 1 fails). The mean over
    the whole cascade, not the last step, so that a method whose maps survive the randomisation of the top layers
    (guided backprop) scores high even though its maps fall apart once the first layer is random too.
    A method that cannot explain this model (CAM without global average pooling, say) is listed with the
    reason instead of stopping the comparison.

    Args:
        model: the classifier (left untouched; call ``model.eval()``).
        inputs: an image batch ``[N, C, H, W]`` (H, W at least 7).
        methods: names from ``ds.methods()`` or callables ``f(model, inputs) -> [N, H, W]``; default: all
            registered methods.
        metrics: any of ``"deletion"``, ``"insertion"``, ``"sanity"``.
        sort_by: the metric to rank by (default: the first of ``metrics``).
        options: per-method ``ds.explain`` options, e.g. ``{"occlusion": {"window": 4}}``; a ``target`` among them
            says how that method measures the predicted class (``ds.probability(None)``).
        random: add a uniform random map (``"random"``) as the yardstick.
        steps: deletion/insertion steps per input.
        batch_size: rows per forward pass in deletion/insertion.
        baseline: what deleted elements become (``ds.faithfulness``'s ``baseline`` for the deletion curve; default
            0). Deleting to a value the data never shows adds content: on black backgrounds (Fashion-MNIST) pass the
            background's value, or grey deletion rewards maps that point at the background.
        progress: a tqdm bar over the methods; ``None`` shows it on a terminal only.

    Returns:
        A :class:`MethodComparison`: ``rows`` best first, ``ranking``, ``failed``, ``figure()``, a table in Jupyter.
    """
    chosen: list[str | MapFunction] = list(registered_methods() if methods is None else methods)
    if random:
        chosen.append(random_map)
    names, options = _check(model, inputs, chosen, "cascading", options, 0)
    if isinstance(metrics, str) or not metrics or any(m not in METRICS for m in metrics):
        raise BadInputError(f"metrics={metrics!r}: choose one or more of {', '.join(METRICS)}.")
    metrics = tuple(metrics)
    sort_by = metrics[0] if sort_by is None else sort_by
    if sort_by not in metrics:
        raise BadInputError(f"sort_by={sort_by!r} is not among the metrics measured, {metrics}.")

    x = inputs.detach().to(probe.model_device(model))
    with torch.no_grad(), probe.preserved(model):
        targets = probe.run(model, x).argmax(dim=1)
    rows: list[MethodScore] = []
    aucs: dict[str, dict[str, Tensor]] = {}
    disable = None if progress is None else not progress
    for name, method in tqdm(list(zip(names, chosen)), desc="comparing methods", disable=disable, leave=False):
        try:
            values = _measure(
                model, x, targets, method, dict(options.get(name, {})), metrics, steps, batch_size, baseline
            )
        except DeepscopeError as error:
            rows.append(MethodScore(name, error=str(error)))
            continue
        aucs[name] = values
        rows.append(MethodScore(name, **{m: float(v.mean()) for m, v in values.items()}))

    def key(row: MethodScore) -> tuple[bool, float]:
        value = row.value(sort_by)
        if row.error is not None or value is None:
            return (True, 0.0)
        return (False, value if LOWER_IS_BETTER[sort_by] else -value)

    return MethodComparison(rows=sorted(rows, key=key), metrics=metrics, sort_by=sort_by, aucs=aucs)


def _measure(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    method: str | MapFunction,
    opts: dict[str, Any],
    metrics: tuple[str, ...],
    steps: int,
    batch_size: int,
    baseline: float | str | Tensor | None = None,
) -> dict[str, Tensor]:
    """One method's per-input values of each metric."""
    opts = dict(opts)
    # A method's options may measure the predicted class its own way (ds.probability(None)): still the same classes.
    target = as_target(opts.pop("target", None)).fixed(targets)
    if callable(method):
        heatmap = method(model, x)
    else:
        explain_opts = dict(opts)
        layer = explain_opts.pop("layer", None)
        heatmap = explain(model, x, method=method, target=target, layer=layer, **explain_opts).heatmap
    values = {}
    for metric in ("deletion", "insertion"):
        if metric in metrics:
            curves = faithfulness(
                model,
                x,
                heatmap,
                metric=metric,
                steps=steps,
                batch_size=batch_size,
                target=targets,
                baseline=baseline if metric == "deletion" else None,
                progress=False,
            )
            values[metric] = curves.auc
    if "sanity" in metrics:
        check = sanity_check(model, x, methods=[method], target=target, options=_sanity_options(method, opts))
        name = check.methods[0]
        values["sanity"] = check.mean_over_steps(name, "spearman")
    return values


def _sanity_options(method: str | MapFunction, opts: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    return {method: opts} if isinstance(method, str) and opts else None
