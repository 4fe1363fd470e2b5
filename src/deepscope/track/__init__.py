"""Training runs: :class:`Run` logs into the embedded store; :mod:`.watch` and :mod:`.graph` compute what it logs."""

from .records import Graph, Histogram, Image, Scalar, Text
from .run import Config, Run

__all__ = ["Config", "Graph", "Histogram", "Image", "Run", "Scalar", "Text"]
