"""The board's web app: the core's routes (runs, views, files, the page), each view's routes (its folder's
``routes.py``, see :mod:`deepscope.dashboard.views`), the static page, plotly.js.

Needs the ``board`` extra (``pip install 'deepscope[board]'``). Every route is GET. With a token, every request
(page, scripts, API, images) must carry it as ``?token=...`` or ``Authorization: Bearer ...``, else 401. Without
one, the server answers only requests addressed to a loopback name (``Host: 127.0.0.1``, ``localhost``,
``[::1]``), so a web page elsewhere cannot read it through DNS rebinding.
"""

from __future__ import annotations

import functools
import importlib
import mimetypes
import os
import secrets
from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from ..errors import BadInputError
from . import api
from .common import NotFound
from .http import JSONAnswer
from .views import all_views, find, registry

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def create_app(root: str | os.PathLike[str], token: str | None = None) -> FastAPI:
    """The board's app serving the runs under the directory ``root``, or in the PostgreSQL database it names
    (``postgresql://...``); with ``token``, every request must carry it."""
    base = api.served_root(root)
    app = FastAPI(title="deepscope board", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = base  # what it serves, for the line that announces it

    @app.exception_handler(NotFound)
    def not_found(request: Request, error: NotFound) -> Response:
        return JSONAnswer({"detail": str(error)}, 404)

    @app.exception_handler(BadInputError)
    def bad_input(request: Request, error: BadInputError) -> Response:
        return JSONAnswer({"detail": str(error)}, 422)

    @app.get("/api/runs")
    def runs() -> Response:
        return JSONAnswer(api.runs(base))

    @app.get("/api/views")
    def views() -> Response:
        return JSONAnswer(api.views(base, app.state.views))

    app.state.views = {}  # each view's state (caches, job queues), by name: per app, never per module
    for view in all_views():
        state = app.state.views[view.name] = view.state() if view.state is not None else None
        router = APIRouter()
        importlib.import_module(f"{view.package}.routes").routes(router, base, state)
        app.include_router(router)

    @app.get("/api/file")
    def file(run: str, path: str) -> Response:
        # A record's file by its reference: from inside the run directory, or as a row of the database.
        found = base.file(run, path)
        headers = {"X-Content-Type-Options": "nosniff"}
        if isinstance(found, Path):
            return FileResponse(found, headers=headers)
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(found, media_type=media, headers=headers)

    @app.get("/")
    def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return JSONAnswer({"detail": f"the page is missing from this installation ({index})"}, 404)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @app.get("/static/views.json")
    def view_registry() -> Response:
        # What the page loads first: every view's name, title, kinds, module and shared conventions.
        return JSONAnswer(registry(), headers={"Cache-Control": "no-cache"})

    @app.get("/static/views/{name}/view.js")
    def view_module(name: str) -> Response:
        view = find(name)
        if view is None or not view.script.is_file():
            return JSONAnswer({"detail": f"no view {name!r}"}, 404)
        return FileResponse(view.script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.add_middleware(_Guard, token=token)
    return app


# V8's compile hint: compile every function of the file at once, on a background thread while it streams in, not
# each one lazily on the main thread at its first call. plotly.js calls most of its 4.8 MB while it loads, so a
# first visit draws its first chart ~0.1 s sooner (measured in headless Chromium); other browsers ignore the comment.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"


@functools.cache
def _plotly_js() -> bytes:
    return COMPILE_HINT + PLOTLY_JS.read_bytes()


class _Guard:
    """Checks every HTTP request before any route sees it (a plain ASGI middleware: no per-request task).

    With a token: the request must carry it (query ``token`` or ``Authorization: Bearer``), else 401. Without:
    the ``Host`` header must name a loopback address, else 403.
    """

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        if self.token is not None:
            given = request.query_params.get("token") or ""
            header = request.headers.get("authorization", "")
            if not given and header[:7].lower() == "bearer ":
                given = header[7:].strip()
            if secrets.compare_digest(given.encode(), self.token):
                return None
            return JSONAnswer({"detail": "this board needs its token: open the URL it printed at start"}, 401)
        host = request.headers.get("host", "").lower()
        name = host if host.endswith("]") else host.rsplit(":", 1)[0]
        if name in LOOPBACK_NAMES:
            return None
        return JSONAnswer({"detail": f"this board answers only on 127.0.0.1/localhost, not {host!r}"}, 403)
