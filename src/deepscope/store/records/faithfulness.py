"""Faithfulness: deletion or insertion curves of several methods on the same inputs, stored as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, plain_fields, register, whole

# The result objects of deepscope.evaluate are read by their public attributes (checked here); they are not
# imported, not even for type checking: the store sits below the code that computes them.

KIND = "faithfulness"


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion or insertion curves of ``M`` methods' explanations of the same ``inputs`` images at a step.

    ``fractions`` float ``[S]`` is the share of the input changed at each point; ``mean`` and ``std`` float
    ``[M, S]`` the target's probability (or score, when ``probability`` is false) over the inputs, one row per
    name in ``methods``; ``auc`` float ``[M]`` the mean area under the inputs' curves.
    :func:`faithfulness_curves` makes one from :class:`deepscope.evaluate.Faithfulness` results; the store keeps it
    as JSON in the database.
    """

    tag: str
    step: int
    metric: str
    methods: list[str]
    fractions: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    auc: np.ndarray
    inputs: int
    probability: bool = True
    wall_time: float | None = None


_ARRAYS = ("fractions", "mean", "std", "auc")


@register
class FaithfulnessCodec(Codec):
    kind = KIND
    record = FaithfulnessCurves
    view = "evaluation"

    def normalise(self, record: FaithfulnessCurves) -> dict[str, Any]:
        tag = record.tag
        if record.metric not in ("deletion", "insertion"):
            raise BadInputError(f"{tag!r}: the metric is 'deletion' or 'insertion', not {record.metric!r}")
        fractions = array(record.fractions).astype(np.float64)
        m, s = len(record.methods), fractions.shape[0] if fractions.ndim == 1 else 0
        arrays = {name: array(getattr(record, name)).astype(np.float64) for name in ("mean", "std", "auc")}
        if not m or s < 2 or arrays["mean"].shape != (m, s) or arrays["std"].shape != (m, s):
            raise BadInputError(f"{tag!r}: fractions are [S >= 2] and mean and std [M, S] = [{m}, {s}], one per method")
        if arrays["auc"].shape != (m,):
            raise BadInputError(f"{tag!r}: auc holds one value per method, [{m}]")
        return {
            "methods": [str(x) for x in record.methods],
            "fractions": fractions,
            **arrays,
            "inputs": whole(record.inputs, "inputs"),
            "probability": bool(record.probability),
        }

    def encode(self, record: FaithfulnessCurves, files: FileSink) -> Stored:
        return Stored(int(record.step), record.wall_time, plain_fields(record))

    def decode(self, tag: str, stored: Stored, files: FileSource) -> FaithfulnessCurves:
        data = dict(stored.data)
        for name in _ARRAYS:
            data[name] = np.asarray(data[name], dtype=np.float64)
        return FaithfulnessCurves(tag, stored.step, wall_time=stored.wall_time, **data)


@loggable(("deepscope.evaluate.faithfulness", "Faithfulness"), description="Faithfulness")
def _results(value: Any, tag: str, step: int) -> list[Any]:
    return [faithfulness_curves(value, tag, step)]


def faithfulness_curves(
    results: Any,
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
    named: list[tuple[str | None, Any]]
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
    curves = [array(r.curves).astype(np.float64) for _, r in named]
    fractions = array(first.fractions).astype(np.float64)
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
