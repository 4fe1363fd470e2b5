"""What the SummaryWriter drop-in adds, in the board's page in headless Chromium (as ``test_board_browser.py``): a
sound plays in an ``<audio controls>`` element, a clip shows as an animated GIF, and the custom-scalars layout
draws its charts, grouped by category, above the per-tag charts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, CHROMIUM_ARGS, serving

import deepscope as ds

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
pytest.importorskip("plotly", reason="plotly is missing (pip install -e '.[board]')")

from deepscope.dashboard import create_app  # noqa: E402

RATE = 8000


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[str]]]:
    root = tmp_path_factory.mktemp("runs")
    with ds.SummaryWriter(root / "tb") as writer:
        for step in range(5):
            writer.add_scalar("loss/train", 1 / (step + 1), step)
            writer.add_scalar("loss/val", 1.5 / (step + 1), step)
            writer.add_scalar("acc", 0.5 + step / 20, step)
            writer.add_scalar("acc/low", 0.4 + step / 20, step)
            writer.add_scalar("acc/high", 0.6 + step / 20, step)
        writer.add_custom_scalars(
            {"Training": {"losses": ["Multiline", ["^loss/"]], "accuracy": ["Margin", ["acc", "acc/low", "acc/high"]]}}
        )
        tone = 0.5 * torch.sin(torch.arange(RATE) * (2 * torch.pi * 440 / RATE))
        writer.add_audio("tone", tone, 0, sample_rate=RATE)
        writer.add_video("clip", torch.rand(1, 4, 3, 8, 8), 0)
    problems: list[str] = []
    with serving(create_app(root)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.goto(f"{url}/")
        tab.wait_for_selector("#tabs button", timeout=15_000)
        yield tab, problems
        browser.close()


def _open(tab: Any, view: str) -> None:
    tab.click(f'#tabs button[data-view="{view}"]')
    tab.wait_for_selector(f'.view[data-view="{view}"]', state="attached")


def test_audio_plays_and_clip_shows(page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    _open(tab, "images")
    tab.wait_for_function("() => document.querySelector('.images audio')?.readyState >= 1", timeout=10_000)
    audio = tab.evaluate(
        "() => { const a = document.querySelector('.images audio');"
        " return {controls: a.controls, duration: a.duration, error: a.error && a.error.code}; }"
    )
    assert audio == {"controls": True, "duration": pytest.approx(1.0, abs=0.01), "error": None}
    tab.wait_for_function("() => document.querySelector('.card[data-kind=video] img')?.naturalWidth > 0")
    clip = tab.evaluate("() => document.querySelector('.card[data-kind=video] img').naturalWidth")
    assert clip == 8
    label = tab.text_content(".card[data-kind=audio] .note") or ""
    assert "1.00 s" in label and f"{RATE} Hz" in label
    assert problems == []


def test_custom_scalars_charts_above_the_others(page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    _open(tab, "scalars")
    tab.wait_for_function("() => document.querySelectorAll('.layouts .plot .main-svg').length >= 2", timeout=10_000)
    charts = tab.evaluate(
        """() => [...document.querySelectorAll('.layouts .card')].map((card) => ({
            title: card.querySelector('.title').textContent,
            traces: card.querySelector('.plot').data.map((t) => [t.name || '', t.y.length, t.fill || '']),
        }))"""
    )
    assert tab.evaluate("() => [...document.querySelectorAll('.layouts h3')].map((h) => h.textContent)") == ["Training"]
    losses, accuracy = charts
    assert losses == {"title": "losses", "traces": [["loss/train", 5, ""], ["loss/val", 5, ""]]}
    assert accuracy["title"] == "accuracy" and [t[2] for t in accuracy["traces"]] == ["", "tonexty", ""]
    above = tab.evaluate(
        "() => document.querySelector('.layouts').compareDocumentPosition("
        "document.querySelector('.layouts ~ .grid .card')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    assert above
    assert problems == []
    np.testing.assert_allclose(
        tab.evaluate("() => document.querySelector('.layouts .card .plot').data[0].x"), np.arange(5)
    )
