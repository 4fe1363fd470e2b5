"""Features: what units learned, per layer: the pictures logged under ``features/<layer>/<what>`` over steps."""

from __future__ import annotations

from ....store import RunSummary
from ....store.records.image import KIND as IMAGE
from ...sources import Source
from .. import View
from .data import FEATURES_PREFIX, feature


def is_active(served: Source, runs: list[RunSummary], state: object) -> bool:
    """Some run holds an image tag ``features/<layer>/<what>``."""
    return any(kind == IMAGE and feature(tag) is not None for run in runs for tag, kind in run.tags.items())


VIEW = View(
    name="features",
    title="Features",
    order=50,
    kinds=(IMAGE,),
    is_active=is_active,
    conventions={"prefix": FEATURES_PREFIX},
)
