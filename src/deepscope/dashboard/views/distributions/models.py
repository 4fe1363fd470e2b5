"""The Distributions view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from pydantic import Field

from ...models import Answer, Number, Unreadable


class HistogramPoint(Answer):
    """One step's histogram: its bins over ``[low, high]`` and summary statistics."""

    step: int
    low: Number
    high: Number
    counts: list[float] = Field(description="the count in each of the equal bins between low and high")
    mean: Number
    std: Number
    zero_fraction: Number
    norm: Number
    count: int


class Histograms(Answer):
    """``/api/histograms``: a tag's histograms in a step window, at most ``max_steps`` of them (first and last
    kept)."""

    run: str
    tag: str
    unreadable: list[Unreadable]
    layer: str
    kind: str = Field(description="weight, bias, gradient, activation or other")
    total: int = Field(description="histograms in the window")
    tag_total: int = Field(description="histograms of the tag at all steps")
    downsampled: bool
    points: list[HistogramPoint]
