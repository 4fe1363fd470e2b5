"""The Scalars view's routes: ``/api/scalars``, ``/api/scalars/batch``, ``/api/custom_scalars``, and
``/api/events`` (live push, :mod:`.live`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from ...common import EncodedCache
from ...http import JSONAnswer, Step
from ...sources import Source
from . import data, live, models


def routes(router: APIRouter, served: Source, cache: EncodedCache) -> None:
    @router.get("/api/scalars", response_model=models.Scalars)
    def scalars(
        run: str,
        tag: str,
        start: Step = None,
        end: Step = None,
        max_points: int = Query(data.DEFAULT_MAX_POINTS, ge=4, le=1_000_000),
        encoding: str = "json",
    ) -> Response:
        return JSONAnswer(data.scalars(served, run, tag, start, end, max_points, encoding))

    @router.get("/api/scalars/batch", response_model=models.ScalarsBatch)
    def scalars_batch(
        tag: str,
        runs: Annotated[list[str] | None, Query()] = None,
        start: Step = None,
        end: Step = None,
        max_points: int = Query(data.DEFAULT_MAX_POINTS, ge=4, le=1_000_000),
        encoding: str = "json",
    ) -> Response:
        # Already JSON: the per-run parts come encoded (and cached) from the view's functions.
        answer = data.scalars_batch_json(served, tag, runs, start, end, max_points, encoding, cache)
        return Response(answer, media_type="application/json")

    @router.get("/api/custom_scalars", response_model=models.CustomScalars)
    def custom_scalars(layout: str | None = None) -> Response:
        # `layout`: a layout edited in the page, as JSON text; none: the runs' own layouts.
        return JSONAnswer(data.custom_scalars(served, data.layout_of(layout)))

    @router.get("/api/events", response_class=StreamingResponse, responses=models.EVENTS)
    def events(request: Request, runs: Annotated[list[str], Query()]) -> Response:
        # Server-sent events (EventSource cannot set headers: a token comes in the query, as for the other GETs).
        live.check(served, runs)
        stopping = getattr(request.app.state, "stopping", None)

        async def gone() -> bool:  # the page went away, or the server stops
            return (stopping is not None and stopping.is_set()) or await request.is_disconnected()

        return StreamingResponse(
            live.stream(served, runs, gone),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
