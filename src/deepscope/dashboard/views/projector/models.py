"""The Projector view's answers and request body (:mod:`deepscope.dashboard.models` says how models document the
routes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ....store.reader import STEP_RANGE
from ...models import Answer, Number, Packed32, Request, binary


class Embedding(Answer):
    """An embedding tag, described at its last step."""

    tag: str
    steps: list[int]
    step: int
    n: int = Field(description="points")
    d: int = Field(description="dimensions")
    columns: list[str] = Field(description="its label columns")
    thumbnails: bool
    stored: list[str] = Field(description="the projections stored with it")
    projections: list[str] = Field(description="those, then the ones the board computes (pca-2d ... umap-3d)")


class Embeddings(Answer):
    """``/api/embeddings``: a run's embeddings."""

    run: str
    embeddings: list[Embedding]


class Codes(Answer):
    """Each point's index into a column's values, in the smallest integer type that holds them."""

    dtype: Literal["<u1", "<u2", "<i4"]
    base64: str


class LabelColumn(Answer):
    name: str
    values: list[str] = Field(description="the distinct values, sorted")
    codes: Codes


class EmbeddingLabels(Answer):
    """``/api/embedding/labels``: an embedding's label columns, compactly."""

    run: str
    tag: str
    step: int
    n: int
    columns: list[LabelColumn]


class Sample(Answer):
    size: int
    indices: Packed32 | None = Field(description="the sampled points' indices (int32, increasing), once done")


class Projection(Answer):
    """``/api/projection`` (GET reads, POST computes) and ``/api/projection/status`` (no points): a projection's
    state and, once done, its ``[n, dim]`` float32 points."""

    run: str
    tag: str
    step: int
    name: str
    stored: bool
    status: Literal["absent", "queued", "running", "done", "failed"]
    n: int
    dim: int
    seconds: float
    progress: float | None = Field(description="the fraction done, or null where the method does not say")
    error: str | None
    points: Packed32 | None
    sample: Sample | None = Field(description="null when every point is projected")


class Neighbors(Answer):
    """``/api/neighbors``: the nearest points to one, in the original feature space, nearest first."""

    run: str
    tag: str
    step: int
    index: int
    metric: str
    indices: list[int]
    distances: list[Number]


class ProjectionRequest(Request):
    """What ``POST /api/projection`` takes, as JSON: the projection to compute (or to join, if already started)."""

    run: str
    tag: str
    name: str = Field(description="a stored projection's name, or pca-2d ... umap-3d")
    step: int | None = Field(None, ge=STEP_RANGE[0], le=STEP_RANGE[1])


THUMBNAIL = binary("image/png", description="a point's thumbnail")  # /api/thumbnail
