"""The dashboard: a local web app over the runs of a directory, live while they are written.

>>> from deepscope.dashboard import board, serve
>>> serve("runs")              # what `deepscope board runs` does: http://127.0.0.1:6006
>>> board("runs")              # in a notebook: the same, in a background thread, shown inline

Needs the ``board`` extra (``pip install 'deepscope[board]'``); importing this module does not import it.
Bound to 127.0.0.1 by default. Bound to any other address without a token, a random token is generated and
printed as part of the URL: every request must then carry it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from fastapi import FastAPI

INSTALL_HINT = "the board needs its extra: pip install 'deepscope[board]' (fastapi, uvicorn, plotly)"

__all__ = ["Board", "board", "create_app", "is_loopback", "serve"]


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import plotly  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT}; missing: {e.name}") from e


def create_app(root: str | os.PathLike[str], token: str | None = None) -> FastAPI:
    """The board's FastAPI app serving the runs under ``root``; with ``token``, every request must carry it."""
    _require()
    from .server import create_app as make

    return make(root, token)


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


def serve(root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 6006, token: str | None = None) -> None:
    """Serve the board in this process until interrupted (Ctrl-C); prints the URL to open."""
    _require()
    import uvicorn

    token = access_token(host, token)
    app = create_app(root, token)
    print(f"deepscope board: serving {Path(root).resolve()} at {url(host, port, token)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@dataclass
class Board:
    """A board served from a background thread; shown inline in a notebook (an iframe), stopped by ``stop()``."""

    url: str
    height: int = 600
    _server: Any = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _repr_html_(self) -> str:
        source = escape(self.url, quote=True)
        return f'<iframe src="{source}" width="100%" height="{int(self.height)}" style="border:0"></iframe>'

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def board(
    root: str | os.PathLike[str] = "runs",
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    height: int = 600,
) -> Board:
    """Start the board in a background thread and return it; a notebook cell showing it embeds the page.

    Args:
        root: the directory of runs.
        port: the port; 0 picks a free one.
        host: the address to bind; any but a loopback one gets a token (see :func:`access_token`).
        token: the token every request must carry.
        height: the inline frame's height in pixels.
    """
    _require()
    import uvicorn

    token = access_token(host, token)
    app = create_app(root, token)
    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host.strip("[]"), 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"deepscope-dashboard-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the board could not start on {host}:{port} (is the port in use?)")
        time.sleep(0.02)
    return Board(url(host, port, token), height, server, thread)
