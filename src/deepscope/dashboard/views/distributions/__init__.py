"""Distributions: a histogram tag over steps, as percentile bands or offset histograms, two runs side by side."""

from __future__ import annotations

from .. import View, kinds_of
from .data import HISTOGRAM_GROUPS

VIEW = View(
    name="distributions",
    title="Distributions",
    order=20,
    kinds=kinds_of("distributions"),
    conventions={"groups": [list(group) for group in HISTOGRAM_GROUPS]},
)
