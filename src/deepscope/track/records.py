"""What a training run records: small typed records, the contract between what computes them and the store.

Computing code (``watch``, ``graph``, the evaluation functions) produces these; :class:`deepscope.Run` hands
them to the store. Each kind is defined, checked, encoded and decoded in its own module of
:mod:`deepscope.store.records`; this module names them where computing code has always found them.
"""

from __future__ import annotations

from ..store.records import (
    COMPARISON_METRICS,
    LOWER_IS_BETTER,
    Audio,
    ComparisonTable,
    Confusion,
    Embedding,
    ExplanationSet,
    FaithfulnessCurves,
    Graph,
    Histogram,
    HistogramKind,
    Image,
    PRCurve,
    Record,
    SanityCurves,
    Scalar,
    ScalarLayout,
    Text,
    Video,
)

__all__ = [
    "COMPARISON_METRICS",
    "LOWER_IS_BETTER",
    "Audio",
    "ComparisonTable",
    "Confusion",
    "Embedding",
    "ExplanationSet",
    "FaithfulnessCurves",
    "Graph",
    "Histogram",
    "HistogramKind",
    "Image",
    "PRCurve",
    "Record",
    "SanityCurves",
    "Scalar",
    "ScalarLayout",
    "Text",
    "Video",
]
