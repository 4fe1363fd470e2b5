"""The Evaluation view's answers (:mod:`deepscope.dashboard.models` says how models document the routes).

Each answers about one record of a tag at a step (the last by default), with every step the tag holds and the
records that cannot be read."""

from __future__ import annotations

from pydantic import Field

from ...models import Answer, Number, Unreadable


class AtStep(Answer):
    run: str
    tag: str
    unreadable: list[Unreadable]
    steps: list[int] = Field(description="every step the tag holds a record at")
    step: int = Field(description="the step answered")


class ConfusionMatrix(AtStep):
    """``/api/confusion_matrix``: counts (row: true class) and each row divided by its total."""

    classes: list[str]
    counts: list[list[int]]
    normalized: list[list[float]]
    accuracy: float
    total: int


class PRCurve(AtStep):
    """``/api/pr_curve``: ROC and PR curves of a binary classifier from its counts per threshold, and both
    classes' score distributions (``positives``, ``negatives``: counts per bin between thresholds)."""

    thresholds: list[Number]
    precision: list[Number]
    tp: list[Number]
    fp: list[Number]
    tn: list[Number]
    fn: list[Number]
    recall: list[Number]
    fpr: list[Number]
    tpr: list[Number]
    auc: Number
    positives: list[Number]
    negatives: list[Number]


class Curve(Answer):
    mean: list[Number]
    std: list[Number]


class SanityCheck(AtStep):
    """``/api/sanity_check``: similarity to the original explanation as layers are randomised."""

    mode: str
    methods: list[str]
    stages: list[str] = Field(description='"original", then each layer randomised')
    metrics: list[str]
    inputs: int
    curves: dict[str, dict[str, Curve]] = Field(description="method -> metric -> its curve over the stages")


class MethodCurve(Answer):
    method: str
    mean: list[Number]
    std: list[Number]
    auc: Number


class Faithfulness(AtStep):
    """``/api/faithfulness``: deletion or insertion curves per method, mean over the inputs."""

    metric: str
    probability: bool
    inputs: int
    fractions: list[Number]
    curves: list[MethodCurve]


class ComparisonRow(Answer):
    method: str
    values: dict[str, Number | None] = Field(description="metric -> mean, null if not measured")
    std: dict[str, Number | None]
    error: str | None = Field(description="why the method failed, or null")


class MethodComparison(AtStep):
    """``/api/method_comparison``: a table of methods by metric, best first."""

    metrics: list[str]
    sort_by: str
    lower_is_better: dict[str, bool]
    rows: list[ComparisonRow]
