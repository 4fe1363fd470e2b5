"""The board's web app: thin FastAPI routes over :mod:`deepscope.dashboard.api`, the static page, plotly.js.

Needs the ``board`` extra (``pip install 'deepscope[board]'``). Every route that only reads is GET; one that starts
work is POST with a JSON body. Who may ask, the headers every answer carries and what an error may say are
:mod:`deepscope.dashboard.security`'s.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..errors import BadInputError
from . import api, security
from .sources import Directory

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
LOOPBACK_NAMES = security.LOOPBACK_NAMES


class _JSON(JSONResponse):
    """Compact JSON; the API already turned non-finite floats into strings, so NaN here is a bug."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def create_app(
    root: str | os.PathLike[str], token: str | None = None, frame_ancestors: str = security.NOT_FRAMED
) -> FastAPI:
    """The board's app serving the runs under the directory ``root``, or in the PostgreSQL database it names
    (``postgresql://...``); with ``token``, every request must carry it. ``frame_ancestors``: who may frame the
    page (CSP), nobody by default."""
    base = api.served_root(root)
    app = FastAPI(title="deepscope board", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = base  # what it serves, for the line that announces it
    roots = [base.shown, os.path.realpath(base.shown)] if isinstance(base, Directory) else []

    def detail(error: BaseException) -> str:
        return security.private(str(error), roots)

    @app.exception_handler(api.NotFound)
    def not_found(request: Request, error: api.NotFound) -> Response:
        return _JSON({"detail": detail(error)}, 404)

    @app.exception_handler(BadInputError)
    def bad_input(request: Request, error: BadInputError) -> Response:
        return _JSON({"detail": detail(error)}, 422)

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> Response:  # logged by the server; the page learns only what
        return _JSON({"detail": f"the board failed to answer ({type(error).__name__}); see its log"}, 500)

    @app.get("/api/runs")
    def runs() -> Response:
        return _JSON(api.runs(base))

    @app.get("/api/views")
    def views() -> Response:
        return _JSON(api.views(base))

    @app.get("/api/scalars")
    def scalars(
        run: str,
        tag: str,
        start: int | None = None,
        end: int | None = None,
        max_points: int = Query(api.DEFAULT_MAX_POINTS, ge=4, le=1_000_000),
        encoding: str = "json",
    ) -> Response:
        return _JSON(api.scalars(base, run, tag, start, end, max_points, encoding))

    @app.get("/api/scalars/batch")
    def scalars_batch(
        tag: str,
        runs: Annotated[list[str] | None, Query()] = None,
        start: int | None = None,
        end: int | None = None,
        max_points: int = Query(api.DEFAULT_MAX_POINTS, ge=4, le=1_000_000),
        encoding: str = "json",
    ) -> Response:
        # Already JSON: the per-run parts come encoded (and cached) from the API.
        answer = api.scalars_batch_json(base, tag, runs, start, end, max_points, encoding)
        return Response(answer, media_type="application/json")

    @app.get("/api/histograms")
    def histograms(
        run: str,
        tag: str,
        start: int | None = None,
        end: int | None = None,
        max_steps: int = Query(api.DEFAULT_MAX_STEPS, ge=2, le=1_000_000),
    ) -> Response:
        return _JSON(api.histograms(base, run, tag, start, end, max_steps))

    @app.get("/api/graph")
    def graph(run: str, tag: str = "model") -> Response:
        return _JSON(api.graph(base, run, tag))

    @app.get("/api/images")
    def images(run: str, tag: str) -> Response:
        return _JSON(api.images(base, run, tag))

    @app.get("/api/custom_scalars")
    def custom_scalars() -> Response:
        return _JSON(api.custom_scalars(base))

    @app.get("/api/features")
    def features(run: str) -> Response:
        return _JSON(api.features(base, run))

    @app.get("/api/confusion_matrix")
    def confusion_matrix(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.confusion_matrix(base, run, tag, step))

    @app.get("/api/pr_curve")
    def pr_curve(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.pr_curve(base, run, tag, step))

    @app.get("/api/sanity_check")
    def sanity_check(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.sanity_check(base, run, tag, step))

    @app.get("/api/faithfulness")
    def faithfulness(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.faithfulness(base, run, tag, step))

    @app.get("/api/method_comparison")
    def method_comparison(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.method_comparison(base, run, tag, step))

    @app.get("/api/explanations")
    def explanations(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.explanations(base, run, tag, step))

    @app.get("/api/text")
    def text(run: str, tag: str) -> Response:
        return _JSON(api.text(base, run, tag))

    @app.get("/api/embeddings")
    def embeddings(run: str) -> Response:
        return _JSON(api.embeddings(base, run))

    @app.get("/api/embedding/labels")
    def embedding_labels(run: str, tag: str, step: int | None = None) -> Response:
        return _JSON(api.embedding_labels(base, run, tag, step))

    @app.get("/api/projection")
    def projection(run: str, tag: str, name: str, step: int | None = None) -> Response:
        return _JSON(api.projection(base, run, tag, name, step))

    @app.get("/api/projection/status")
    def projection_status(run: str, tag: str, name: str, step: int | None = None) -> Response:
        return _JSON(api.projection_status(base, run, tag, name, step))

    @app.get("/api/neighbors")
    def neighbors(
        run: str,
        tag: str,
        index: int,
        k: int = Query(api.DEFAULT_NEIGHBORS, ge=1, le=1000),
        metric: str = "cosine",
        step: int | None = None,
    ) -> Response:
        return _JSON(api.neighbors(base, run, tag, index, k, metric, step))

    @app.get("/api/thumbnail")
    def thumbnail(run: str, tag: str, index: int, step: int | None = None) -> Response:
        # A record never changes once written: with its step named, the browser may keep the picture a while.
        png = api.thumbnail(base, run, tag, index, step)
        cache = "private, max-age=3600" if step is not None else "no-cache"
        return Response(png, media_type="image/png", headers={"Cache-Control": cache})

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
            return _JSON({"detail": "the page is missing from this installation (static/index.html)"}, 404)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @app.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    index = STATIC / "index.html"
    page_bytes = index.read_bytes() if index.is_file() else b""
    app.add_middleware(security.Guard, token=token, extra=security.headers(page_bytes, frame_ancestors))
    return app


def app_from_environment() -> FastAPI:
    """The app a worker process of ``serve(workers=N)`` serves (uvicorn's app factory): the root in
    ``$DEEPSCOPE_BOARD_ROOT``, the token (if any) in ``$DEEPSCOPE_TOKEN``, as :func:`deepscope.dashboard.serve` set
    them."""
    from . import ROOT_ENV, TOKEN_ENV

    return create_app(os.environ[ROOT_ENV], os.environ.get(TOKEN_ENV) or None)


# V8's compile hint: compile every function of the file at once, on a background thread while it streams in, not
# each one lazily on the main thread at its first call. plotly.js calls most of its 4.8 MB while it loads, so a
# first visit draws its first chart ~0.1 s sooner (measured in headless Chromium); other browsers ignore the comment.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"


@functools.cache
def _plotly_js() -> bytes:
    return COMPILE_HINT + PLOTLY_JS.read_bytes()
