"""Histograms: a tensor's distribution at a step, in a table of their own (bins as a blob, summary statistics as
columns), so the board's distribution view reads only numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, real, register

KIND = "histogram"
HistogramKind = Literal["weight", "bias", "gradient", "activation", "other"]
_STATISTICS = ("mean", "std", "zero_fraction", "norm")


@dataclass(frozen=True)
class Histogram:
    """A tensor's distribution at a step: ``counts`` over ``len(counts)`` uniform bins from ``low`` to ``high``.

    ``layer`` is the module name and ``kind`` what the tensor is (weights, biases, gradients, activations), so a
    view can group them; the summary statistics come from the whole tensor, not from the bins.
    """

    tag: str
    step: int
    low: float
    high: float
    counts: np.ndarray
    layer: str = ""
    kind: HistogramKind = "other"
    mean: float = float("nan")
    std: float = float("nan")
    zero_fraction: float = float("nan")
    norm: float = float("nan")
    count: int = 0
    nonfinite: int = 0
    wall_time: float | None = None


@register
class HistogramCodec(Codec):
    kind = KIND
    record = Histogram
    table = "histograms"
    view = "distributions"

    def normalise(self, record: Histogram) -> dict[str, Any]:
        counts = np.asarray(record.counts)
        if counts.ndim != 1 or counts.dtype.kind not in "iuf":
            raise BadInputError(
                f"{record.tag!r}: histogram counts must be a 1-D numeric array, not {counts.dtype} {counts.shape}"
            )
        return {"counts": counts}

    def weight(self, record: Histogram) -> int:
        return 1 + record.counts.size // 64

    def encode(self, record: Histogram, files: FileSink) -> Stored:
        counts = np.ascontiguousarray(record.counts)
        columns = {
            "low": float(record.low),
            "high": float(record.high),
            "counts": counts.tobytes(),
            "counts_dtype": counts.dtype.str,
            "layer": record.layer,
            "kind": record.kind,
            **{name: float(getattr(record, name)) for name in _STATISTICS},
            "count": int(record.count),
            "nonfinite": int(record.nonfinite),
        }
        return Stored(int(record.step), record.wall_time, columns)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Histogram:
        row = stored.data
        return Histogram(
            tag=tag,
            step=stored.step,
            low=real(row["low"]),
            high=real(row["high"]),
            counts=np.frombuffer(row["counts"], dtype=row["counts_dtype"]),
            layer=row["layer"],
            kind=row["kind"],
            **{name: real(row[name]) for name in _STATISTICS},
            count=row["count"],
            nonfinite=row["nonfinite"],
            wall_time=stored.wall_time,
        )
