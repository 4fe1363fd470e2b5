"""The dashboard: a local web app over the runs of a directory, or of a PostgreSQL store, live while they are written.

>>> from deepscope.dashboard import board, serve
>>> serve("runs")              # what `deepscope board runs` does: http://127.0.0.1:6006
>>> board("runs")              # in a notebook: the same, in a background thread, shown inline
>>> serve("postgresql://me@db.example.org/deepscope", host="0.0.0.0")   # a team's store, with a token

Needs the ``board`` extra (``pip install 'deepscope[board]'``); importing this module does not import it.
Bound to 127.0.0.1 by default. Bound to any other address without a token, a random token is generated and
printed as part of the URL: every request must then carry it.

Behind a proxy (JupyterHub, jupyter-server-proxy) the browser cannot reach 127.0.0.1 of the kernel's machine: the
board is then shown at the proxy's address, ``{prefix}proxy/{port}/`` (see :func:`proxy_template`), with a token.
Every address the page uses is relative to its own, so it works under any path prefix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import BadInputError
from ..store.schema import RUNS_DIR

if TYPE_CHECKING:
    from fastapi import FastAPI

INSTALL_HINT = "the board needs its extra: pip install 'deepscope[board]' (fastapi, uvicorn, plotly)"

__all__ = ["Board", "board", "create_app", "is_loopback", "proxy_template", "serve", "token_from"]

PROXY_ENV = "DEEPSCOPE_PROXY"  # chooses for proxy="auto": off, on, or an address template with {port}
HUB_PREFIX_ENV = "JUPYTERHUB_SERVICE_PREFIX"  # the user's server's base URL, set by JupyterHub (/user/<name>/)
_VSCODE_ENV = ("VSCODE_PID", "VSCODE_CWD")  # VS Code forwards a kernel's ports itself: no proxy there
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})


# Seconds a stopping server waits for the requests under way. A page's live stream (``/api/events``) ends itself
# when told the server stops (:func:`_stopping`); where nobody can tell it (several worker processes), this ends it.
GRACE_S = 1


def _stopping(app: Any) -> None:
    """Tell the app's live streams that its server stops (``app.state.stopping``, see ``views/scalars/live.py``)."""
    event = getattr(getattr(app, "state", None), "stopping", None)
    if event is not None:
        event.set()


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import plotly  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT}; missing: {e.name}") from e


def create_app(root: str | os.PathLike[str], token: str | None = None, framed: bool = False) -> FastAPI:
    """The board's FastAPI app serving the runs under the directory ``root`` or in the PostgreSQL database it names;
    with ``token``, every request must carry it. ``framed``: the page may be shown in a frame of a page on this
    machine or of its own origin (a notebook's output); otherwise no page may frame it."""
    _require()
    from .security import NOT_FRAMED, NOTEBOOK_FRAMES
    from .server import create_app as make

    return make(root, token, NOTEBOOK_FRAMES if framed else NOT_FRAMED)


TOKEN_ENV = "DEEPSCOPE_TOKEN"  # the board's token, kept out of the command line (where `ps` shows it)
ROOT_ENV = "DEEPSCOPE_BOARD_ROOT"  # what the worker processes of `serve(workers=...)` serve


def token_from(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    """The token ``deepscope board`` requires: ``--token``, else the first line of ``--token-file``, else
    ``$DEEPSCOPE_TOKEN``, else ``None``; a ``BadInputError`` for both flags at once, or an empty or unreadable file."""
    if token is not None and token_file is not None:
        raise BadInputError("give the token with --token or with --token-file, not both")
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise BadInputError(f"--token-file {token_file}: cannot read it ({e.strerror})") from e
        token = lines[0].strip() if lines else ""
        if not token:
            raise BadInputError(f"--token-file {token_file} is empty: write the token on its first line")
        return token
    return token if token is not None else (os.environ.get(TOKEN_ENV) or None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token the server will require: ``token`` if given, else ``None`` on a loopback host and a new random
    one on any other (a board reachable from the network is never open to anyone)."""
    if token is not None:
        if not token:
            raise ValueError("the token must not be empty")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def url(host: str, port: int, token: str | None) -> str:
    """The address to open in a browser (with the token, when there is one)."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if name in ("0.0.0.0", "[::]"):
        name = socket.gethostname()
    return f"http://{name}:{port}/" + (f"?token={quote(token)}" if token else "")


def proxy_template(proxy: bool | str = "auto") -> str | None:
    """The address a proxy serves the board at, with ``{port}`` for its port, or ``None`` for the board's own.

    ``proxy``:
        * ``False``: no proxy, the browser reaches the board directly.
        * ``True``: jupyter-server-proxy's convention, ``{prefix}proxy/{port}/`` with ``prefix`` the Jupyter
          server's base URL (``$JUPYTERHUB_SERVICE_PREFIX`` under JupyterHub, else ``/``).
        * a template with ``{port}``, e.g. ``"/user/me/proxy/{port}/"`` or ``"https://hub.example.org/{port}/"``.
        * ``"auto"`` (the default): ``$DEEPSCOPE_PROXY`` when set (``0``/``off``, ``1``/``on``, or a template);
          else ``True`` under JupyterHub (``$JUPYTERHUB_SERVICE_PREFIX`` is set) or where jupyter-server-proxy is
          installed outside VS Code (which forwards ports itself); else ``False``.

    Raises:
        BadInputError: a template without ``{port}``, or a ``$DEEPSCOPE_PROXY`` that is none of the above.
    """
    if proxy == "auto":
        chosen = os.environ.get(PROXY_ENV, "").strip()
        if chosen:
            if chosen.lower() in _OFF | _ON:
                return proxy_template(chosen.lower() in _ON)
            return _template(chosen, f"${PROXY_ENV}={chosen!r}")
        detected = os.environ.get(HUB_PREFIX_ENV) is not None or (
            importlib.util.find_spec("jupyter_server_proxy") is not None
            and not any(name in os.environ for name in _VSCODE_ENV)
        )
        return proxy_template(detected)
    if proxy is True:
        prefix = os.environ.get(HUB_PREFIX_ENV) or "/"
        return prefix.rstrip("/") + "/proxy/{port}/"
    if proxy is False:
        return None
    if isinstance(proxy, str):
        return _template(proxy, f"proxy={proxy!r}")
    raise BadInputError(f"proxy={proxy!r}: pass 'auto', True, False or an address template with {{port}}")


def _template(text: str, given: str) -> str:
    if "{port}" not in text:
        raise BadInputError(
            f"{given}: an address template names the port as {{port}}, e.g. '/user/me/proxy/{{port}}/'; "
            "or use 0/off (no proxy) or 1/on (jupyter-server-proxy's /proxy/{port}/)"
        )
    try:
        text.format(port=0)
    except (KeyError, IndexError, ValueError) as e:
        raise BadInputError(f"{given}: {{port}} is the only field an address template may have ({e})") from e
    return text


def proxied_url(template: str, port: int, token: str | None) -> str:
    """The address of the board through a proxy: ``template`` with its port, and the token when there is one."""
    address = template.format(port=port)
    return address + (f"{'&' if '?' in address else '?'}token={quote(token)}" if token else "")


def serve(
    root: str | os.PathLike[str] = RUNS_DIR,
    host: str = "127.0.0.1",
    port: int = 6006,
    token: str | None = None,
    proxy: bool | str = "auto",
    workers: int = 1,
    model: str | None = None,
    data: str | None = None,
) -> None:
    """Serve the board in this process until interrupted (Ctrl-C); prints the URL to open (and, behind a proxy,
    the proxy's address for it: see :func:`proxy_template`).

    ``workers``: how many processes answer requests (a board many people watch at once, on a machine with cores to
    spare); each keeps its own caches and computes its own projections. With ``model`` and ``data``
    (``"package.module:factory"`` each), the Explore view explains their items with the runs' checkpoints, in a
    worker process of the one server process (so not with ``workers`` > 1).
    """
    _require()
    import uvicorn

    if workers < 1:
        raise BadInputError(f"workers={workers}: pass 1 or more processes")
    if workers > 1 and (model is not None or data is not None):
        raise BadInputError(
            f"workers={workers} with model/data: the Explore view's jobs run beside one server process; pass workers=1"
        )
    template = proxy_template(proxy)
    token = _token(host, token, template)
    app = create_app(root, token)
    explore(app, model, data)
    shown = f"deepscope board: serving {app.state.served.shown} at {url(host, port, token)}"
    if template is not None:
        shown += f" (through the proxy: {proxied_url(template, port, token)})"
    if workers > 1:  # each worker makes its app from what the environment says (uvicorn's app factory)
        print(f"{shown} with {workers} worker processes", flush=True)
        os.environ[ROOT_ENV] = os.fspath(root)
        os.environ.pop(TOKEN_ENV, None)
        if token is not None:
            os.environ[TOKEN_ENV] = token
        factory = "deepscope.dashboard.server:app_from_environment"  # each worker's app warms its own caches
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            timeout_graceful_shutdown=GRACE_S,
        )
        return

    class Server(uvicorn.Server):
        """uvicorn's server, remembering whether Ctrl-C (SIGINT) stopped it: uvicorn stops gracefully then and
        returns, and the caller learns of it as of any other Ctrl-C, by a KeyboardInterrupt."""

        interrupted = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.interrupted = self.interrupted or sig == signal.SIGINT
            _stopping(self.config.app)
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # Said once it serves (its port bound, Ctrl-C handled by uvicorn), not before the server is up.
            await super().startup(sockets)
            if self.started:
                print(shown, flush=True)

    warm(app)
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S))
    server.run()
    if server.interrupted:
        raise KeyboardInterrupt


def _token(host: str, token: str | None, template: str | None) -> str | None:
    """:func:`access_token`; behind a proxy always one, as requests come with the proxy's ``Host``, not ours."""
    token = access_token(host, token)
    return secrets.token_urlsafe(24) if token is None and template is not None else token


@dataclass
class Board:
    """A board served from a background thread; shown inline in a notebook (an iframe), stopped by ``stop()``.

    ``url`` is the address a browser opens: the proxy's one behind a proxy, else ``local_url``, the server's own.
    """

    url: str
    height: int = 600
    _server: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    local_url: str = ""
    app: Any = field(default=None, repr=False)  # the FastAPI app served (its views' state: app.state.views)

    def _repr_html_(self) -> str:
        source = escape(self.url, quote=True)
        return (
            f'<iframe src="{source}" width="100%" height="{int(self.height)}" style="border:0"></iframe>'
            f'<p><a href="{source}" target="_blank" rel="noopener">open the board in a new tab</a></p>'
        )

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        _stopping(self.app)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def board(
    root: str | os.PathLike[str] = RUNS_DIR,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    height: int = 600,
    proxy: bool | str = "auto",
    model: Any = None,
    data: Any = None,
) -> Board:
    """Start the board in a background thread and return it; a notebook cell showing it embeds the page.

    Args:
        root: the directory of runs, or a PostgreSQL store's URL (``postgresql://user@host/db``).
        port: the port; 0 picks a free one.
        host: the address to bind; any but a loopback one gets a token (see :func:`access_token`).
        token: the token every request must carry.
        height: the inline frame's height in pixels.
        proxy: whether the browser reaches the board through a proxy, and at which address (JupyterHub,
            jupyter-server-proxy: ``{prefix}proxy/{port}/``); detected by default, see :func:`proxy_template`.
            Behind a proxy the board always has a token, carried in the address shown.
        model, data: a model (an ``nn.Module``, or a factory's ``"package.module:name"``) and a data set (a
            ``(inputs, labels)`` pair of tensors, a tensor, a map-style data set, or ``"package.module:name"``):
            the Explore view explains their items on demand, with the runs' checkpoints, in a worker process.
    """
    _require()
    import uvicorn

    template = proxy_template(proxy)
    token = _token(host, token, template)
    app = create_app(root, token, framed=True)
    explore(app, model, data)
    warm(app)
    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host.strip("[]"), 0))
            port = probe.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"deepscope-dashboard-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the board could not start on {host}:{port} (is the port in use?)")
        time.sleep(0.02)
    local = url(host, port, token)
    shown = local if template is None else proxied_url(template, port, token)
    return Board(shown, height, server, thread, local_url=local, app=app)


def warm(app: FastAPI) -> threading.Thread:
    """List the served runs in a background thread as the server starts (TensorBoard loads its logdir alike), then
    let each view that shows and has a ``warm`` read what its first answer needs: the page opened next finds each
    run's info, tags and config read, and its first requests only stamp the runs. A request that comes meanwhile waits
    for this listing, then takes its own (never an older one); a view's state keeps only what no writer holds."""
    from .views import all_views

    def listing() -> None:
        began = time.perf_counter()
        with contextlib.suppress(Exception):  # the first request lists again, and reports what is wrong
            served = app.state.served
            runs = served.runs()
            for view in all_views():
                state = app.state.views.get(view.name)
                if view.warm is not None and view.active(served, runs, state):
                    view.warm(served, runs, state)
        app.state.warmed_s = time.perf_counter() - began  # how long it took (benchmarks say it)

    thread = threading.Thread(target=listing, name="deepscope-dashboard-listing", daemon=True)
    app.state.warming = thread
    thread.start()
    return thread


def explore(app: FastAPI, model: Any, data: Any) -> None:
    """Give ``app`` the Explore view's model and data (nothing for ``model=None``): factories by name are handed to
    the worker as they are; objects (a notebook's model) are saved for it with ``torch.save`` into a temporary
    folder, removed when the interpreter exits."""
    if model is None and data is None:
        return
    if model is None or data is None:
        raise BadInputError("the explorer needs both model= and data= (--model and --data)")
    import atexit
    import shutil
    import tempfile

    from .views.explore import configure

    spec: dict[str, Any] = {}
    folder: str | None = None
    for name, value in (("model", model), ("data", data)):
        if isinstance(value, str):
            spec[name] = value
            continue
        from ..explore.worker import save_object  # an object of torch's: torch is loaded already

        if folder is None:
            folder = tempfile.mkdtemp(prefix="deepscope-explore-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        spec[name] = save_object(value, os.path.join(folder, f"{name}.pt"))
    explorer = configure(app, spec)
    atexit.register(explorer.close)
