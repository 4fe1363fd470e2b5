"""The Explore view's routes: ``GET /api/explore``, ``POST /api/explore/jobs``, ``GET /api/explore/jobs/{id}``,
``GET /api/explore/file``, ``GET /api/explore/items`` (the items filtered by class, prediction and confidence),
``POST /api/explore/uploads`` (an image, at most ``data.MAX_UPLOAD`` bytes: a larger body is refused with 413
before it is read).

Starting a job is a POST whose body is JSON (``Content-Type: application/json``): a page of another origin can send
a form or a plain-text POST without asking, never a JSON one (the browser asks first, and the board grants no
other origin), and a request whose ``Origin`` names another site is refused outright.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from ...http import JSONAnswer, Step
from ...models import checked
from ...security import json_body
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: data.ExploreState) -> None:
    @router.get("/api/explore", response_model=models.Offer)
    def explore() -> Response:
        return JSONAnswer(data.info(state))

    @router.post("/api/explore/jobs", response_model=models.Job, openapi_extra=models.JOB_BODY)
    async def start(request: Request) -> Response:
        refusal = _refusal(request)
        if refusal is not None:
            return JSONAnswer({"detail": refusal}, 403)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONAnswer({"detail": "the body is not JSON"}, 400)
        checked(models.JobRequest, body)
        client = request.headers.get("x-deepscope-client") or (request.client.host if request.client else "")
        return JSONAnswer(data.start(served, state, client, body))

    @router.post("/api/explore/uploads", response_model=models.Uploaded, openapi_extra=models.UPLOAD_BODY)
    async def upload(request: Request) -> Response:
        refusal = _refusal(request)
        if refusal is not None:
            return JSONAnswer({"detail": refusal}, 403)
        too_large = JSONAnswer({"detail": _too_large()}, 413)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > data.MAX_UPLOAD_BODY:
            return too_large  # refused before reading it
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > data.MAX_UPLOAD_BODY:
                return too_large  # a body without (or with a false) Content-Length: read no further
        try:
            found = json.loads(body)
        except ValueError:
            return JSONAnswer({"detail": "the body is not JSON"}, 400)
        checked(models.UploadRequest, found)
        try:
            return JSONAnswer(data.upload(served, state, found))
        except data.TooLarge as error:
            return JSONAnswer({"detail": str(error)}, 413)

    @router.get("/api/explore/items", response_model=models.Items)
    def items(
        run: str,
        step: Step = None,
        label: int | None = None,
        predicted: int | None = None,
        misclassified: bool = False,
        min_confidence: float = Query(0.0, ge=0, le=1),
        max_confidence: float = Query(1.0, ge=0, le=1),
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        return JSONAnswer(
            data.items(
                served,
                state,
                run,
                step,
                label,
                predicted,
                misclassified,
                (min_confidence, max_confidence),
                offset,
                limit,
            )
        )

    @router.get("/api/explore/jobs/{job}", response_model=models.Job)
    def job(job: str) -> Response:
        return JSONAnswer(data.status(state, job))

    @router.get("/api/explore/file", response_class=Response, responses=models.PICTURE)
    def file(run: str, key: str, name: str) -> Response:
        return FileResponse(data.result_file(served, run, key, name), headers={"X-Content-Type-Options": "nosniff"})


def _too_large() -> str:
    return (
        f"the upload is too large: an image may be at most {data.MAX_UPLOAD // 2**20} MB "
        f"(a JSON body of at most {data.MAX_UPLOAD_BODY} bytes)"
    )


def _refusal(request: Request) -> str | None:
    """Why a POST that starts work is refused: not JSON, or sent by a page of another origin."""
    if not json_body(request.headers.get("content-type")):
        return "starting a job takes a JSON body (Content-Type: application/json)"
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        return f"a page of {origin} may not start jobs on this board"
    return None
