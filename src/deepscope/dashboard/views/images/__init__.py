"""Images: pictures, sounds and clips over steps (every image tag but the Features view's)."""

from __future__ import annotations

from ....store import RunSummary
from ....store.records.image import KIND as IMAGE
from ...sources import Source
from .. import View
from ..features.data import feature
from .data import MEDIA


def is_active(served: Source, runs: list[RunSummary], state: object) -> bool:
    """Some run holds a sound, a clip, or a picture outside ``features/`` (those have their own tab)."""
    return any(
        kind in MEDIA and (kind != IMAGE or feature(tag) is None) for run in runs for tag, kind in run.tags.items()
    )


VIEW = View(name="images", title="Images", order=40, kinds=MEDIA, is_active=is_active, conventions={"kinds": MEDIA})
