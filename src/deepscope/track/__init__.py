"""Training runs: :class:`Run` logs into the embedded store; :mod:`.watch` and :mod:`.graph` compute what it logs.

The records are plain data (numpy); :class:`Run` and :class:`Config` are imported on first use, since they bring
torch, which readers of the store (the board) do not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .records import (
    Audio,
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
    ScalarLayout,
    Text,
    Video,
)

if TYPE_CHECKING:
    from .run import Config, Run

__all__ = [
    "Audio",
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
    "ScalarLayout",
    "Text",
    "Video",
]

if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise read every unknown name as Any

    def __getattr__(name: str) -> Any:
        if name in ("Config", "Run"):
            from . import run

            return getattr(run, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
