"""The page beside damaged runs, and a run finishing while the page is open: headless Chromium (as
test_board_browser.py), the board served with its security headers (a script the policy blocked would be a console
error here)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, serving
from test_board_isolation import DAMAGED, LOSS, _healthy

import deepscope as ds

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")

from deepscope.dashboard import create_app  # noqa: E402

TRACE_POINTS = """([tag, run]) => {
    const gd = document.querySelector(`.card[data-tag="${tag}"] .plot`);
    const trace = gd && gd.data && gd.data.find((t) => t.meta === run && t.x && t.x.length);
    return trace ? trace.x.length : 0;
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ds.Run, str]]:
    root = tmp_path_factory.mktemp("served")
    _healthy(root / "healthy")
    for name in ("bad_info", "bad_chunk", "bad_json"):
        shutil.copytree(root / "healthy", root / name)
        with sqlite3.connect(root / name / "run.db") as db:
            db.execute(DAMAGED[name])
    shutil.copytree(root / "healthy", root / "truncated")
    db_file = root / "truncated" / "run.db"
    db_file.write_bytes(db_file.read_bytes()[: db_file.stat().st_size // 2])
    # A run still written; flushed by hand only, so what it logs last lands when it closes.
    live = ds.Run(root / "live", flush_interval=3600)
    live.log_series("loss", np.arange(3), np.ones(3))
    live.flush()
    try:
        with serving(create_app(root)) as url:
            yield root, live, f"{url}/"
    finally:
        live.close()


@pytest.fixture(scope="module")
def page(served: tuple[Path, ds.Run, str]) -> Iterator[tuple[Any, list[str]]]:
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(served[2] + "?view=scalars")
        page.wait_for_selector("#tabs button", timeout=30_000)
        yield page, problems
        browser.close()


def test_the_healthy_runs_draw_and_the_damaged_ones_are_named(page: tuple[Any, list[str]]) -> None:
    page, problems = page
    page.wait_for_function(TRACE_POINTS, arg=["loss", "healthy"], timeout=30_000)
    assert page.evaluate(TRACE_POINTS, ["loss", "healthy"]) == len(LOSS)
    assert page.evaluate(TRACE_POINTS, ["loss", "bad_json"]) == len(LOSS)  # its scalars are fine
    page.wait_for_selector("#unreadable:not([hidden])")
    listed = page.inner_text("#unreadable ul", timeout=5_000) if page.is_visible("#unreadable ul") else ""
    if not listed:
        page.click("#unreadable summary")
        listed = page.inner_text("#unreadable ul")
    for name in ("bad_info", "truncated", "bad_chunk"):
        assert name in listed, listed
    assert "is not JSON" in listed and "packed chunk 0 is damaged" in listed
    page.click('#tabs button[data-view="text"]')
    page.wait_for_selector(".texts .markdown")  # notes are Markdown now (a <pre> only for a code block)
    shown = page.eval_on_selector_all(".texts .card .title", "(ts) => ts.map((t) => t.textContent)")
    assert "healthy · notes" in shown and "bad_json · notes" in shown
    page.wait_for_function("() => document.querySelector('#unreadable').textContent.includes('notes at step 5')")
    assert not problems, problems


def test_a_finishing_runs_last_points_reach_the_open_page(
    page: tuple[Any, list[str]], served: tuple[Path, ds.Run, str]
) -> None:
    page, problems = page
    _, live, _ = served
    page.click('#tabs button[data-view="scalars"]')
    page.wait_for_function(f"() => ({TRACE_POINTS})(['loss', 'live']) === 3", timeout=30_000)
    live.log_series("loss", np.arange(3, 10), np.zeros(7))
    live.close()  # the last points land with the close, as the run stops being "running"
    page.wait_for_function(f"() => ({TRACE_POINTS})(['loss', 'live']) === 10", timeout=20_000)
    assert not problems, problems
