"""The Explore view's routes: ``GET /api/explore``, ``POST /api/explore/jobs``, ``GET /api/explore/jobs/{id}``,
``GET /api/explore/file``.

Starting a job is a POST whose body is JSON (``Content-Type: application/json``): a page of another origin can send
a form or a plain-text POST without asking, never a JSON one (the browser asks first, and the board grants no
other origin), and a request whose ``Origin`` names another site is refused outright.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from ...http import JSONAnswer
from ...security import json_body
from ...sources import Source
from . import data


def routes(router: APIRouter, served: Source, state: data.ExploreState) -> None:
    @router.get("/api/explore")
    def explore() -> Response:
        return JSONAnswer(data.info(state))

    @router.post("/api/explore/jobs")
    async def start(request: Request) -> Response:
        refusal = _refusal(request)
        if refusal is not None:
            return JSONAnswer({"detail": refusal}, 403)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONAnswer({"detail": "the body is not JSON"}, 400)
        client = request.headers.get("x-deepscope-client") or (request.client.host if request.client else "")
        return JSONAnswer(data.start(served, state, client, body))

    @router.get("/api/explore/jobs/{job}")
    def job(job: str) -> Response:
        return JSONAnswer(data.status(state, job))

    @router.get("/api/explore/file")
    def file(run: str, key: str, name: str) -> Response:
        return FileResponse(data.result_file(served, run, key, name), headers={"X-Content-Type-Options": "nosniff"})


def _refusal(request: Request) -> str | None:
    """Why a POST that starts work is refused: not JSON, or sent by a page of another origin."""
    if not json_body(request.headers.get("content-type")):
        return "starting a job takes a JSON body (Content-Type: application/json)"
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        return f"a page of {origin} may not start jobs on this board"
    return None
