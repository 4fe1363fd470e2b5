"""Training runs: :class:`Run` logs into the embedded store; :mod:`.watch` and :mod:`.graph` compute what it logs."""

from .records import Confusion, Embedding, ExplanationSet, Graph, Histogram, Image, PRCurve, Scalar, Text
from .run import Config, Run

__all__ = [
    "Config",
    "Confusion",
    "Embedding",
    "ExplanationSet",
    "Graph",
    "Histogram",
    "Image",
    "PRCurve",
    "Run",
    "Scalar",
    "Text",
]
