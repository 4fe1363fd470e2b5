"""Sanity checks: how alike each method's maps stay as the model is randomised, as curves in JSON (no maps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, plain_fields, register, whole

# The result objects of deepscope.evaluate are read by their public attributes (checked here); they are not
# imported, not even for type checking: the store sits below the code that computes them.

KIND = "sanity_check"


@dataclass(frozen=True)
class SanityCurves:
    """A sanity check's similarity curves at a step: how alike each method's maps stay as the model is randomised.

    ``stages`` are the check's steps (``"original"``, then each layer re-initialised, or the retrained models of
    a data randomisation check); ``mean[method][metric]`` and ``std[method][metric]`` are float ``[stages]``: the
    mean and (population) standard deviation over the ``inputs`` images of the similarity to the original map,
    ``metric`` one of ``metrics``. :func:`sanity_curves` makes one from a :class:`deepscope.evaluate.SanityCheck`;
    the store keeps it as JSON in the database (the maps stay out).
    """

    tag: str
    step: int
    mode: str
    methods: list[str]
    stages: list[str]
    metrics: list[str]
    mean: dict[str, dict[str, np.ndarray]]
    std: dict[str, dict[str, np.ndarray]]
    inputs: int
    wall_time: float | None = None


@register
class SanityCodec(Codec):
    kind = KIND
    record = SanityCurves
    view = "evaluation"

    def normalise(self, record: SanityCurves) -> dict[str, Any]:
        tag, n = record.tag, len(record.stages)
        methods, metrics = [str(m) for m in record.methods], [str(m) for m in record.metrics]
        if not methods or not metrics or not n:
            raise BadInputError(f"{tag!r}: a sanity check has at least one method, metric and step")
        arrays: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for name in ("mean", "std"):
            given = getattr(record, name)
            if not isinstance(given, Mapping) or set(given) != set(methods):
                raise BadInputError(f"{tag!r}: {name} holds one entry per method, {methods}")
            arrays[name] = {}
            for method in methods:
                per = given[method]
                if not isinstance(per, Mapping) or set(per) != set(metrics):
                    raise BadInputError(f"{tag!r}: {name}[{method!r}] holds one curve per metric, {metrics}")
                curves = {metric: array(per[metric]).astype(np.float64) for metric in metrics}
                if any(c.shape != (n,) for c in curves.values()):
                    raise BadInputError(f"{tag!r}: {name}[{method!r}] curves are float [{n}], one value per step")
                arrays[name][method] = curves
        return {
            "mode": str(record.mode),
            "methods": methods,
            "stages": [str(s) for s in record.stages],
            "metrics": metrics,
            **arrays,
            "inputs": whole(record.inputs, "inputs"),
        }

    def encode(self, record: SanityCurves, files: FileSink) -> Stored:
        return Stored(int(record.step), record.wall_time, plain_fields(record))

    def decode(self, tag: str, stored: Stored, files: FileSource) -> SanityCurves:
        data = dict(stored.data)
        for name in ("mean", "std"):
            data[name] = {
                method: {metric: np.asarray(v, dtype=np.float64) for metric, v in per.items()}
                for method, per in data[name].items()
            }
        return SanityCurves(tag, stored.step, wall_time=stored.wall_time, **data)


@loggable(("deepscope.evaluate.sanity", "SanityCheck"), description="SanityCheck")
def _check(value: Any, tag: str, step: int) -> list[Any]:
    return [sanity_curves(value, tag, step)]


def sanity_curves(check: Any, tag: str = "sanity_check", step: int = 0) -> SanityCurves:
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
        per_metric = {str(metric): array(values).astype(np.float64) for metric, values in scores[method].items()}
        metrics = metrics or list(per_metric)
        if list(per_metric) != metrics or any(a.ndim != 2 or len(a) != len(stages) for a in per_metric.values()):
            raise BadInputError(f"{tag!r}: {method}'s scores are not [steps, N] for the metrics {metrics}")
        mean[str(method)] = {metric: a.mean(axis=1) for metric, a in per_metric.items()}
        std[str(method)] = {metric: a.std(axis=1) for metric, a in per_metric.items()}
    inputs = next(iter(scores[methods[0]].values())).shape[1] if methods and metrics else 0
    return SanityCurves(
        tag, step, str(check.mode), [str(m) for m in methods], [str(s) for s in stages], metrics, mean, std, inputs
    )
