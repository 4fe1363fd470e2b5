"""Training runs: :class:`Run` logs into the embedded store; :mod:`.watch` and :mod:`.graph` compute what it logs."""

from .records import (
    ComparisonTable,
    Confusion,
    Embedding,
    ExplanationSet,
    FaithfulnessCurves,
    Graph,
    Histogram,
    Image,
    PRCurve,
    SanityCurves,
    Scalar,
    Text,
)
from .run import Config, Run

__all__ = [
    "ComparisonTable",
    "Config",
    "Confusion",
    "Embedding",
    "ExplanationSet",
    "FaithfulnessCurves",
    "Graph",
    "Histogram",
    "Image",
    "PRCurve",
    "Run",
    "SanityCurves",
    "Scalar",
    "Text",
]
