"""The Explore view's answers and request bodies (:mod:`deepscope.dashboard.models` says how models document the
routes). The worker's results (an explanation, a checkpoint's predictions) are described here too, as the board
hands them on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...models import Answer, Request, binary, request_body


class Offer(Answer):
    """``/api/explore``: what the worker offers."""

    methods: list[str]
    items: int
    labels: list[int | None]
    classes: list[str] | None


class Top(Answer):
    class_: int = Field(alias="class")
    probability: float


class Explained(Answer):
    method: str
    layer: str | None
    target: Any
    score: float
    files: dict[str, str] = Field(description="heatmap, overlay -> its file in the result")


class Result(Answer):
    """An explanation job's result: the first method's explanation, then each method's."""

    item: int | None
    upload: str | None
    label: int | None
    method: str
    layer: str | None
    target: Any
    score: float
    explanations: list[Explained]
    step: int | None
    top: list[Top]
    files: list[str]


class Predicted(Answer):
    """A predictions job's result: how many items the checkpoint at ``step`` predicted."""

    step: int | None
    items: int


class Urls(Answer):
    """The result's pictures' addresses (``api/explore/file?...``)."""

    input: str
    heatmap: str
    overlay: str
    explanations: list[dict[str, str]]


class Job(Answer):
    """``POST /api/explore/jobs``, ``/api/explore/jobs/{job}``: a job's status, place in the queue and result."""

    id: str
    run: str
    key: str
    status: Literal["queued", "running", "done", "failed"]
    position: int | None = Field(description="its place in the queue (0: next), null once taken")
    seconds: float
    cached: bool
    result: Result | Predicted | None
    error: str | None
    queued: int = Field(description="jobs waiting in all")
    others_running: bool
    urls: Urls | None = Field(None, description="an explanation's pictures, once done")


class Row(Answer):
    item: int
    label: int | None
    predicted: int
    confidence: float


class Items(Answer):
    """``/api/explore/items``: the items that match, with the predictions of a checkpoint."""

    step: int | None
    total: int
    matching: int
    items: list[Row]
    classes: list[int]


class Uploaded(Answer):
    """``POST /api/explore/uploads``: the upload's name (for a job's ``upload``) and size."""

    upload: str
    bytes: int


class JobRequest(Request):
    """What ``POST /api/explore/jobs`` takes, as JSON: an item (or an upload) and the methods to explain it with,
    or ``{"run", "predictions": true}`` for every item's prediction."""

    run: str
    item: int | None = None
    upload: str | None = Field(None, description="a name POST /api/explore/uploads gave")
    methods: list[str] | None = Field(None, description="1 to 6 different method names")
    method: str | None = Field(None, description="one method (instead of methods)")
    target: int | None = Field(None, description="a class index; null for the predicted class")
    layer: str | None = Field(None, description="a name from model.named_modules(), or null")
    step: int | None = Field(None, description="a checkpoint's step; default the run's last")
    predictions: bool | None = None


class UploadRequest(Request):
    """What ``POST /api/explore/uploads`` takes, as JSON: an image file's bytes in base64 (or a data: URL)."""

    run: str
    image: str


PICTURE = binary("image/png", description="a result's picture")  # /api/explore/file
JOB_BODY = request_body(JobRequest)  # the routes read their bodies themselves (the type and size checked first)
UPLOAD_BODY = request_body(UploadRequest)
