"""The Projector view's routes: ``/api/embeddings``, ``/api/embedding/labels``, ``/api/projection`` (GET reads,
POST with a JSON body computes), ``/api/projection/status``, ``/api/neighbors``, ``/api/thumbnail``."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...http import Index, JSONAnswer, Step
from ...security import json_body
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: data.Projector) -> None:
    @router.get("/api/embeddings", response_model=models.Embeddings)
    def embeddings(run: str) -> Response:
        return JSONAnswer(data.embeddings(served, run, state))

    @router.get("/api/embedding/labels", response_model=models.EmbeddingLabels)
    def embedding_labels(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.embedding_labels(served, run, tag, step, state))

    @router.get("/api/projection", response_model=models.Projection)
    def projection(run: str, tag: str, name: str, step: Step = None) -> Response:
        # Reads only: a GET is what any page can make a browser send (an <img>), so it never starts a computation.
        return JSONAnswer(data.projection(served, run, tag, name, step, state, start=False))

    @router.post("/api/projection", response_model=models.Projection)
    def compute_projection(request: Request, asked: models.ProjectionRequest) -> Response:
        # A JSON body: a page elsewhere cannot send one without a CORS preflight, which the board never grants (a
        # body without a Content-Type, which FastAPI would read as JSON, is refused too).
        if not json_body(request.headers.get("content-type")):
            refused = "send the projection to compute as JSON (Content-Type: application/json)"
            return JSONAnswer({"detail": refused}, 415)
        return JSONAnswer(data.projection(served, asked.run, asked.tag, asked.name, asked.step, state, start=True))

    @router.get("/api/projection/status", response_model=models.Projection)
    def projection_status(run: str, tag: str, name: str, step: Step = None) -> Response:
        return JSONAnswer(data.projection_status(served, run, tag, name, step, state))

    @router.get("/api/neighbors", response_model=models.Neighbors)
    def neighbors(
        run: str,
        tag: str,
        index: Index,
        k: int = Query(data.DEFAULT_NEIGHBORS, ge=1, le=1000),
        metric: str = "cosine",
        step: Step = None,
    ) -> Response:
        return JSONAnswer(data.neighbors(served, run, tag, index, k, metric, step, state))

    @router.get("/api/thumbnail", response_class=Response, responses=models.THUMBNAIL)
    def thumbnail(run: str, tag: str, index: Index, step: Step = None) -> Response:
        # A record never changes once written: with its step named, the browser may keep the picture a while.
        png = data.thumbnail(served, run, tag, index, step, state)
        cache = "private, max-age=3600" if step is not None else "no-cache"
        return Response(png, media_type="image/png", headers={"Cache-Control": cache})
