"""The Projector view's routes: ``/api/embeddings``, ``/api/embedding/labels``, ``/api/projection``,
``/api/projection/status``, ``/api/neighbors``, ``/api/thumbnail``."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data


def routes(router: APIRouter, served: Source, state: data.Projector) -> None:
    @router.get("/api/embeddings")
    def embeddings(run: str) -> Response:
        return JSONAnswer(data.embeddings(served, run, state))

    @router.get("/api/embedding/labels")
    def embedding_labels(run: str, tag: str, step: int | None = None) -> Response:
        return JSONAnswer(data.embedding_labels(served, run, tag, step, state))

    @router.get("/api/projection")
    def projection(run: str, tag: str, name: str, step: int | None = None) -> Response:
        return JSONAnswer(data.projection(served, run, tag, name, step, state))

    @router.get("/api/projection/status")
    def projection_status(run: str, tag: str, name: str, step: int | None = None) -> Response:
        return JSONAnswer(data.projection_status(served, run, tag, name, step, state))

    @router.get("/api/neighbors")
    def neighbors(
        run: str,
        tag: str,
        index: int,
        k: int = Query(data.DEFAULT_NEIGHBORS, ge=1, le=1000),
        metric: str = "cosine",
        step: int | None = None,
    ) -> Response:
        return JSONAnswer(data.neighbors(served, run, tag, index, k, metric, step, state))

    @router.get("/api/thumbnail")
    def thumbnail(run: str, tag: str, index: int, step: int | None = None) -> Response:
        # A record never changes once written: with its step named, the browser may keep the picture a while.
        png = data.thumbnail(served, run, tag, index, step, state)
        cache = "private, max-age=3600" if step is not None else "no-cache"
        return Response(png, media_type="image/png", headers={"Cache-Control": cache})
