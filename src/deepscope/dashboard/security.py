"""What every request and answer of the board passes through: who may ask, and what the browser may do with the page.

* **Who may ask.** With a token, every request (page, scripts, API, files) must carry it, as ``?token=...`` or
  ``Authorization: Bearer ...``, else 401. Without one (a board bound to a loopback address), the ``Host`` header
  must be a well-formed loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, with an optional port), else 403:
  a page elsewhere cannot reach the board through DNS rebinding. A ``Host`` that is not a plain name and port
  (``127.0.0.1:1@evil.example``) is 400 either way.
* **What the browser may do.** Every answer carries a Content-Security-Policy (scripts only from the board itself,
  plus the hashes of the page's own inline scripts; plotly.js's WebGL traces compile their shaders' wrappers with
  ``Function``, hence ``'unsafe-eval'``), ``frame-ancestors 'none'`` (no other site may frame the page, which holds
  the token in its address; a notebook's inline board allows its loopback and same-origin frames only),
  ``Referrer-Policy: no-referrer`` (the token never leaves in a ``Referer``) and ``X-Content-Type-Options:
  nosniff``.
* **What an answer says.** Error messages name runs and files relative to the served directory, never by the
  server's absolute paths (:func:`private`).

Anything that starts work (a projection, an Explore job) is a POST with a JSON body (:func:`json_body`): a
cross-origin page can send a GET (an ``<img>``) or a form POST without asking, never a JSON one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

# A Host header: a DNS name or IPv4 address, or a bracketed IPv6 address, and an optional port; nothing else
# (no user info, path or second host).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9][A-Za-z0-9.-]{0,252}))(?::(?P<port>\d{1,5}))?")

# Where a page may be framed: nowhere, or (a board shown inline in a notebook) by its own origin (a Jupyter
# server's proxy) and by pages on this machine (Jupyter at localhost:8888 framing 127.0.0.1:<port>; VS Code).
NOT_FRAMED = "'none'"
NOTEBOOK_FRAMES = (
    "'self' http://localhost:* http://127.0.0.1:* http://[::1]:* https://localhost:* https://127.0.0.1:* "
    "vscode-webview:"
)

_INLINE_SCRIPT = re.compile(rb"<script(?:\s[^>]*)?>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def host_name(header: str) -> str | None:
    """The name a ``Host`` header gives, in lower case (an IPv6 address without its brackets), or ``None`` for a
    header that is not exactly a name (or bracketed IPv6 address) and an optional port 1-65535."""
    found = _HOST.fullmatch(header)
    if found is None or (found["port"] is not None and not 0 < int(found["port"]) < 65536):
        return None
    return (found["v6"] or found["name"]).lower()


def inline_hashes(page: bytes) -> list[str]:
    """The CSP sources (``'sha256-...'``) of the inline scripts of an HTML page."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(page)
        if body.strip()
    ]


def headers(page: bytes, frame_ancestors: str = NOT_FRAMED) -> list[tuple[bytes, bytes]]:
    """The security headers of every answer of a board whose page is ``page`` (its inline scripts allowed by hash)."""
    scripts = " ".join(["'self'", "'unsafe-eval'", *inline_hashes(page)])
    policy = "; ".join(
        (
            "default-src 'self'",
            f"script-src {scripts}",
            "style-src 'self' 'unsafe-inline'",  # plotly.js sets styles on the elements it draws
            "img-src 'self' data: blob:",
            "media-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {frame_ancestors}",
        )
    )
    found = [
        (b"content-security-policy", policy.encode()),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]
    if frame_ancestors == NOT_FRAMED:
        found.append((b"x-frame-options", b"DENY"))
    return found


class Guard:
    """A plain ASGI middleware (no per-request task) in front of every route: refuses a request that may not ask
    (see the module's docstring) and adds :func:`headers` to every answer, refusals included."""

    def __init__(self, app: Any, token: str | None, extra: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.extra = extra
        self.names = {name for name, _ in extra}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message = {**message, "headers": kept + self.extra}
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, detail = refusal
            body = json.dumps({"detail": detail}).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        """``(status, detail)`` for a request to refuse, else ``None``."""
        fields = _headers(scope)
        hosts = fields.get(b"host", [])
        name = host_name(hosts[0].decode("latin-1")) if len(hosts) == 1 else None
        if name is None:
            return 400, "the request's Host header must be one host name (or [IPv6 address]) and an optional port"
        if self.token is not None:
            if secrets.compare_digest(_given_token(scope, fields), self.token):
                return None
            return 401, "this board needs its token: open the URL it printed at start"
        if name in LOOPBACK_NAMES:
            return None
        return 403, f"this board answers only on 127.0.0.1/localhost, not {name!r}"


def _headers(scope: dict[str, Any]) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for key, value in scope.get("headers", []):
        found.setdefault(key.lower(), []).append(value)
    return found


def _given_token(scope: dict[str, Any], fields: dict[bytes, list[bytes]]) -> bytes:
    """The token a request carries: ``?token=`` (the first), else ``Authorization: Bearer``; ``b""`` if none."""
    from urllib.parse import parse_qs

    given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
    if given:
        return given.encode("latin-1", "replace")
    header = (fields.get(b"authorization") or [b""])[0]
    return header[7:].strip() if header[:7].lower() == b"bearer " else b""


def private(message: str, roots: Iterable[str]) -> str:
    """An error message fit to send: the served directory's absolute path (``roots``: as given and resolved) taken
    off the names that start with it, and any other absolute path cut to its last part."""
    for root in sorted({r.rstrip("/") for r in roots if r and r != "/"}, key=len, reverse=True):
        message = message.replace(root + "/", "").replace(root, ".")
    return _ABSOLUTE.sub(lambda found: "…/" + found[0].rstrip("/").rsplit("/", 1)[-1], message)


# An absolute POSIX path of two or more parts, not inside a word or a relative path (``train/loss``, ``files/1/x``).
_ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def json_body(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` is JSON: what a page elsewhere cannot send without the board's consent
    (a CORS preflight the board never grants)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"
