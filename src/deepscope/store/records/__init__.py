"""The record kinds of the store, one module each, registered as :class:`~.codec.Codec` objects on import.

The order of the imports is the order of :func:`~.codec.loggables` (what the error for a value ``run.log`` cannot
take lists) and of :func:`~.codec.codecs`.
"""

from __future__ import annotations

# isort: off
from . import (  # noqa: F401 - each import registers its kind, in this order
    scalar,
    histogram,
    graph,
    text,
    image,
    audio,
    video,
    layout,
    embedding,
    explanation,
    confusion,
    pr_curve,
    sanity,
    faithfulness,
    comparison,
    checkpoint,
)

# isort: on
from .audio import Audio
from .checkpoint import CheckpointState
from .codec import Codec, FileSink, FileSource, Loggable, Stored, codec_for, codec_named, codecs, loggables
from .comparison import COMPARISON_METRICS, LOWER_IS_BETTER, ComparisonTable
from .confusion import Confusion
from .embedding import Embedding
from .explanation import ExplanationSet
from .faithfulness import FaithfulnessCurves
from .graph import Graph
from .histogram import Histogram, HistogramKind
from .image import Image
from .layout import ScalarLayout
from .pr_curve import PRCurve
from .sanity import SanityCurves
from .scalar import Scalar
from .text import Text
from .video import Video

# What Run.log_records accepts (checkpoints are made by Run.checkpoint).
Record = (
    Scalar
    | Histogram
    | Graph
    | Text
    | Image
    | Audio
    | Video
    | ScalarLayout
    | Embedding
    | PRCurve
    | Confusion
    | ExplanationSet
    | SanityCurves
    | FaithfulnessCurves
    | ComparisonTable
)

__all__ = [
    "COMPARISON_METRICS",
    "LOWER_IS_BETTER",
    "Audio",
    "CheckpointState",
    "Codec",
    "ComparisonTable",
    "Confusion",
    "Embedding",
    "ExplanationSet",
    "FaithfulnessCurves",
    "FileSink",
    "FileSource",
    "Graph",
    "Histogram",
    "HistogramKind",
    "Image",
    "Loggable",
    "PRCurve",
    "Record",
    "SanityCurves",
    "Scalar",
    "ScalarLayout",
    "Stored",
    "Text",
    "Video",
    "codec_for",
    "codec_named",
    "codecs",
    "loggables",
]
