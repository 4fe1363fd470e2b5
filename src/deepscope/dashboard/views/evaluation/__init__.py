"""Evaluation: confusion matrices, ROC / PR curves and score distributions, and whether explanations can be
trusted (sanity checks, faithfulness curves, method comparisons)."""

from __future__ import annotations

from ....store.records.comparison import KIND as COMPARISON
from ....store.records.faithfulness import KIND as FAITHFULNESS
from ....store.records.sanity import KIND as SANITY
from .. import View, kinds_of

# The kinds `run.log_sanity_check`, `run.log_method_comparison` and `run.log_faithfulness` store.
TRUST_KINDS = (SANITY, COMPARISON, FAITHFULNESS)

VIEW = View(
    name="evaluation",
    title="Evaluation",
    order=70,
    kinds=kinds_of("evaluation"),
    conventions={"trust_kinds": TRUST_KINDS},
    traces=("heatmap", "scatter", "bar"),
)
