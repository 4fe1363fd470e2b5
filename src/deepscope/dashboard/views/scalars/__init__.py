"""Scalars: one chart per scalar tag, runs overlaid, plus the custom-scalars layouts (TensorBoard's)."""

from __future__ import annotations

from .. import View, kinds_of
from .data import CHART_POINTS, DEFAULT_MAX_POINTS, MIN_POINTS, encoded_cache, warm

VIEW = View(
    name="scalars",
    title="Scalars",
    order=10,
    kinds=kinds_of("scalars"),
    state=encoded_cache,
    warm=warm,
    # the page's points per run (view.js pointsPerRun; data.points_per_run): what the server warms is what it asks
    conventions={"chart_points": CHART_POINTS, "min_points": MIN_POINTS, "max_points": DEFAULT_MAX_POINTS},
)
