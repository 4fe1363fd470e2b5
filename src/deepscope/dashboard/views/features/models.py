"""The Features view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from pydantic import Field

from ...models import Answer, Number


class Series(Answer):
    steps: list[int]
    values: list[Number]


class FeatureKind(Answer):
    """One image tag ``features/<layer>/<what>``: its steps (the pictures come from ``/api/images``) and the
    scalars logged beside it (``features/<layer>/<what>/<name>``)."""

    what: str
    tag: str
    steps: list[int]
    scalars: dict[str, Series]


class FeatureLayer(Answer):
    layer: str
    kinds: list[FeatureKind]


class Features(Answer):
    """``/api/features``: a run's feature pictures by layer, layers and kinds in natural order."""

    run: str
    steps: list[int] = Field(description="every step some kind has pictures at")
    layers: list[FeatureLayer]
