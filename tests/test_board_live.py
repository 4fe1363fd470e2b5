"""Live push (``/api/events``): a server-sent event names a run as soon as a writer flushes points into it, a
quiet run sends none, and the route keeps the board's token and name checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import deepscope as ds

pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
from fastapi.testclient import TestClient

from deepscope.dashboard import create_app
from deepscope.dashboard.sources import source
from deepscope.dashboard.views.scalars import live

LOCAL = "http://127.0.0.1"


async def _events(root: Path, runs: list[str], write: Any, wanted: int, timeout: float = 10.0) -> list[str]:
    """The first ``wanted`` events streamed about ``runs``, ``write()`` called once the stream is ready."""
    stream = live.stream(source(root), runs, _never, tick=0.02)
    found: list[str] = []

    async def collect() -> None:
        async for text in stream:
            if "event: ready" in text:
                write()
            found.extend(line for line in text.splitlines() if line.startswith(("event:", "data:")))
            if sum(line.startswith("event:") for line in found) >= wanted:
                return

    await asyncio.wait_for(collect(), timeout)
    await stream.aclose()
    return found


async def _never() -> bool:
    return False


def test_a_flush_is_an_event_naming_the_run_and_a_quiet_run_is_not_named(tmp_path: Path) -> None:
    writer = ds.Run(tmp_path / "writing", flush_interval=3600)
    writer.log({"loss": 1.0}, step=0)
    writer.flush()
    with ds.Run(tmp_path / "quiet") as run:
        run.log({"loss": 1.0}, step=0)

    def write() -> None:
        writer.log({"loss": 0.5}, step=1)
        writer.flush()

    try:
        found = asyncio.run(_events(tmp_path, ["quiet", "writing"], write, wanted=2))
    finally:
        writer.close()
    ready, points = ['data: {"runs": ["quiet", "writing"]}', 'data: {"runs": ["writing"]}']
    assert found == ["event: ready", ready, "event: points", points]


def test_events_keep_the_token_and_refuse_names_outside_the_root(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "a") as run:
        run.log({"loss": 1.0}, step=0)
    client = TestClient(create_app(tmp_path, token="s3cret"), base_url=LOCAL)
    assert client.get("/api/events", params={"runs": "a"}).status_code == 401
    refused = client.get("/api/events", params={"runs": "../a", "token": "s3cret"})
    assert refused.status_code == 404
    assert str(tmp_path) not in refused.text
    assert client.get("/api/events", params={"token": "s3cret"}).status_code == 422  # which runs: required


def test_a_stopping_board_ends_the_open_streams(tmp_path: Path) -> None:
    """A page's stream never ends by itself: ``Board.stop()`` tells it to, instead of waiting for it (or having
    uvicorn cancel it, logging an error)."""
    import logging
    import threading
    import urllib.request

    from deepscope.dashboard import board

    writer = ds.Run(tmp_path / "writing", flush_interval=3600)
    writer.log({"loss": 1.0}, step=0)
    writer.flush()
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    served = board(tmp_path)
    logging.getLogger("uvicorn.error").addHandler(handler)  # after the server set up its logging (which resets it)
    lines: list[bytes] = []
    opened = threading.Event()

    def read() -> None:
        with urllib.request.urlopen(served.local_url.split("?")[0] + "api/events?runs=writing", timeout=30) as answer:
            for line in answer:
                lines.append(line)
                opened.set()

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        assert opened.wait(10)
        served.stop()
        reader.join(10)
        assert not reader.is_alive() and not served._thread.is_alive()  # type: ignore[union-attr]
        assert b"event: ready\n" in lines
        assert not [m for m in logged if "graceful" in m or "Exception" in m], logged
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        served.stop()
        writer.close()
