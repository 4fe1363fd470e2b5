"""The board's web app: the core's routes (runs, views, files, the page), each view's routes (its folder's
``routes.py``, see :mod:`deepscope.dashboard.views`), the static page, plotly.js.

Needs the ``board`` extra (``pip install 'deepscope[board]'``). Every route that only reads is GET; one that starts
work is POST with a JSON body. Each JSON answer and body has its pydantic model (the views' ``models.py``, the
core's :mod:`deepscope.dashboard.models`), published as the OpenAPI schema at ``/openapi.json``. Who may ask, the
headers every answer carries and what an error may say are :mod:`deepscope.dashboard.security`'s.
"""

from __future__ import annotations

import functools
import importlib
import mimetypes
import os
import threading
from pathlib import Path

import plotly
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from ..errors import BadInputError
from . import api, models, security
from .common import NotFound
from .http import JSONAnswer
from .sources import Directory
from .views import all_views, find, registry

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# The page's first plotly.js: the basic build (scatter, bar, pie), a quarter of the whole one's size and compile time;
# static/core.js loads the whole build only for a chart that needs another trace type (vendor/README.md).
PLOTLY_BASIC_JS = Path(__file__).parent / "vendor" / "plotly-basic.min.js"
LOOPBACK_NAMES = security.LOOPBACK_NAMES


def create_app(
    root: str | os.PathLike[str], token: str | None = None, frame_ancestors: str = security.NOT_FRAMED
) -> FastAPI:
    """The board's app serving the runs under the directory ``root``, or in the PostgreSQL database it names
    (``postgresql://...``); with ``token``, every request must carry it. ``frame_ancestors``: who may frame the
    page (CSP), nobody by default."""
    base = api.served_root(root)
    # The OpenAPI schema at /openapi.json, behind the same Guard as every route; no docs page (Swagger UI comes from
    # a CDN, which neither the CSP nor a machine without network allows).
    app = FastAPI(
        title="deepscope board",
        version=models.API_VERSION,
        description=models.DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        responses=models.ERRORS,
    )
    app.state.served = base  # what it serves, for the line that announces it
    app.state.stopping = threading.Event()  # set as the server stops: live streams end (views/scalars/live.py)
    roots = [base.shown, os.path.realpath(base.shown)] if isinstance(base, Directory) else []

    def detail(error: BaseException) -> str:
        return security.private(str(error), roots)

    @app.exception_handler(NotFound)
    def not_found(request: Request, error: NotFound) -> Response:
        return JSONAnswer({"detail": detail(error)}, 404)

    @app.exception_handler(BadInputError)
    def bad_input(request: Request, error: BadInputError) -> Response:
        return JSONAnswer({"detail": detail(error)}, 422)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> Response:  # a query or body of the wrong type
        return JSONAnswer({"detail": security.private(models.readable(list(error.errors())), roots)}, 422)

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> Response:  # logged by the server; the page learns only what
        return JSONAnswer({"detail": f"the board failed to answer ({type(error).__name__}); see its log"}, 500)

    @app.get("/api/runs", response_model=list[models.Run])
    def runs() -> Response:
        return JSONAnswer(api.runs(base))

    @app.get("/api/views", response_model=dict[str, bool])
    def views() -> Response:
        return JSONAnswer(api.views(base, app.state.views))

    @app.get("/api/overview", response_model=models.Overview)
    def overview() -> Response:  # the runs and the views, as the page polls them: one listing for both
        return JSONAnswer(api.overview(base, app.state.views))

    app.state.views = {}  # each view's state (caches, job queues), by name: per app, never per module
    for view in all_views():
        state = app.state.views[view.name] = view.state() if view.state is not None else None
        router = APIRouter()
        importlib.import_module(f"{view.package}.routes").routes(router, base, state)
        app.include_router(router)

    @app.get("/api/file", response_class=Response, responses=models.FILE)
    def file(run: str, path: str) -> Response:
        # A record's file by its reference: from inside the run directory, or as a row of the database.
        found = base.file(run, path)
        headers = {"X-Content-Type-Options": "nosniff"}
        if isinstance(found, Path):
            return FileResponse(found, headers=headers)
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(found, media_type=media, headers=headers)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return JSONAnswer({"detail": "the page is missing from this installation (static/index.html)"}, 404)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @app.get("/static/views.json", response_model=list[models.RegistryEntry])
    def view_registry() -> Response:
        # What the page loads first: every view's name, title, kinds, module and shared conventions.
        return JSONAnswer(registry(), headers={"Cache-Control": "no-cache"})

    @app.get("/static/views/{name}/view.js", include_in_schema=False)
    def view_module(name: str) -> Response:
        view = find(name)
        if view is None or not view.script.is_file():
            return JSONAnswer({"detail": f"no view {name!r}"}, 404)
        return FileResponse(view.script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return _script(PLOTLY_JS)

    @app.get("/static/plotly-basic.min.js", include_in_schema=False)
    def plotly_basic_js() -> Response:
        return _script(PLOTLY_BASIC_JS)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    index = STATIC / "index.html"
    page_bytes = index.read_bytes() if index.is_file() else b""
    app.add_middleware(security.Guard, token=token, extra=security.headers(page_bytes, frame_ancestors))
    return app


def app_from_environment() -> FastAPI:
    """The app a worker process of ``serve(workers=N)`` serves (uvicorn's app factory): the root in
    ``$DEEPSCOPE_BOARD_ROOT``, the token (if any) in ``$DEEPSCOPE_TOKEN``, as :func:`deepscope.dashboard.serve` set
    them. Each worker's app warms its own caches as it starts (:func:`deepscope.dashboard.warm`): a worker keeps its
    own, so one warmed in the parent process would serve no request."""
    from . import ROOT_ENV, TOKEN_ENV, warm

    app = create_app(os.environ[ROOT_ENV], os.environ.get(TOKEN_ENV) or None)
    warm(app)
    return app


# V8's compile hint: compile every function of the file at once, on a background thread while it streams in, not
# each one lazily on the main thread at its first call. plotly.js calls most of its 4.8 MB while it loads, so a
# first visit draws its first chart ~0.1 s sooner (measured in headless Chromium); other browsers ignore the comment.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"


def _script(path: Path) -> Response:
    """A build of plotly.js, with the compile hint, cached by the browser for a day."""
    return Response(_hinted(path), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@functools.cache
def _hinted(path: Path) -> bytes:
    return COMPILE_HINT + path.read_bytes()
