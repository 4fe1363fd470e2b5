"""The board's display in headless Chromium: custom-scalars layouts (from the run, edited in the page, kept in the
URL, downloaded and imported as JSON, a bad regex named in its chart), the Evaluation view's text never clipped
nor drawn over, and the Features view's pictures at a whole multiple of their natural size, several a row.

One small store and one Chromium for the file (no model: the evaluation records are built from their dataclasses);
``problems`` collects console and page errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, chromium, serving, watched_page

import deepscope as ds
from deepscope.evaluate.classification import binary_report, confusion_matrix
from deepscope.evaluate.comparison import MethodComparison, MethodScore
from deepscope.evaluate.faithfulness import Faithfulness
from deepscope.track.records import Image

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")

from deepscope.dashboard import create_app

LAYOUT = {"Training": {"losses": ["Multiline", ["^loss/"]], "accuracy": ["Margin", ["acc", "acc/low", "acc/high"]]}}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Long layer names, rotated under the sanity chart: what used to run into its legend and axis title.
STAGES = ["original", "classifier.fc2", "classifier.fc1", "features.block3.conv", "features.block2.conv"]
METHODS = ("saliency", "integrated_gradients", "gradcam")
UNITS = 8  # 28 x 28 maximisations of fc, as for FashionMNIST
CAP = 160  # the Features view's cap on a picture's longer side (views/features/view.js PICTURE_CAP)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    with ds.Run(root / "a") as run:  # logs the layout
        for step in range(5):
            run.log({"loss/train": 1 / (step + 1), "loss/val": 1.5 / (step + 1)}, step=step)
            run.log({"acc": 0.5 + step / 20, "acc/low": 0.4 + step / 20, "acc/high": 0.6 + step / 20}, step=step)
        run.add_custom_scalars(LAYOUT)
    with ds.Run(root / "b") as run:  # no layout of its own: its losses join the layout's chart
        for step in range(5):
            run.log({"loss/train": 2 / (step + 1), "loss/test": 2.5 / (step + 1)}, step=step)
    g = torch.Generator().manual_seed(0)
    scores = {m: {k: torch.rand(len(STAGES), 4, generator=g) for k in ("spearman", "ssim")} for m in METHODS}
    check = SimpleNamespace(mode="cascading", methods=list(METHODS), steps=STAGES, scores=scores)
    comparison = MethodComparison(
        rows=[MethodScore(m, deletion=0.1 * i, insertion=0.8 - 0.1 * i, sanity=0.2) for i, m in enumerate(METHODS)],
        metrics=("deletion", "insertion", "sanity"),
        sort_by="deletion",
    )
    fractions = torch.linspace(0, 1, 5)
    faith = [
        Faithfulness("deletion", torch.rand(4, 5, generator=g), torch.rand(4, generator=g), fractions, method=m)
        for m in METHODS
    ]
    labels = torch.randint(0, len(CLASSES), (200,), generator=g)
    logits = torch.rand(200, len(CLASSES), generator=g)
    with ds.Run(root / "eval") as run:
        run.log_sanity_check(check)  # type: ignore[arg-type]
        run.log_method_comparison(comparison)
        run.log_faithfulness(faith)
        run.log_confusion_matrix(confusion_matrix(labels, logits, classes=CLASSES))
        run.log_pr_curve(binary_report(labels, logits.softmax(1), classes=CLASSES))
        rng = np.random.default_rng(0)
        for unit in range(UNITS):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            run.log_records([Image(f"features/fc/maximize/{unit}", 0, pixels, caption=f"class {unit}: 0.9")])
    return root


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    with serving(create_app(root)) as url:
        yield f"{url}/"


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    with watched_page(browser, viewport={"width": 1400, "height": 900}, accept_downloads=True) as watched:
        yield watched


# ---- custom-scalars layouts ---------------------------------------------------------------------------------------

LAYOUT_CHARTS = """() => Object.fromEntries([...document.querySelectorAll('.layouts .card')].map((card) => [
    card.querySelector('.title').textContent,
    {names: (card.querySelector('.plot').data || []).filter((t) => t.showlegend !== false).map((t) => t.name).sort(),
     error: card.querySelector('.layout-error').hidden ? null : card.querySelector('.layout-error').textContent}]))"""


def _drawn(page: Any, title: str, count: int) -> dict[str, Any]:
    """The layout charts once the chart ``title`` draws ``count`` legend entries."""
    page.wait_for_function(
        """([title, count]) => [...document.querySelectorAll('.layouts .card')].some((card) =>
            card.querySelector('.title').textContent === title
            && (card.querySelector('.plot').data || []).filter((t) => t.showlegend !== false).length === count)""",
        arg=[title, count],
        timeout=15_000,
    )
    charts: dict[str, Any] = page.evaluate(LAYOUT_CHARTS)
    return charts


def _add_chart(page: Any, title: str, regexes: str) -> None:
    if page.is_hidden(".layout-editor"):
        page.click(".layout-bar [data-action=edit]")
    page.click(".layout-editor [data-action=add]")
    row = page.locator(".layout-row").last
    row.locator("[data-field=title]").fill(title)
    row.locator("textarea").fill(regexes)
    row.locator("textarea").dispatch_event("change")


def test_a_run_layout_draws_one_chart_with_the_matched_tags_of_every_run(
    page: tuple[Any, list[str]], server: str
) -> None:
    page, problems = page
    page.goto(f"{server}?view=scalars")
    charts = _drawn(page, "losses", 4)
    # a's layout, drawn over b too: every tag "^loss/" finds, in each run that has it
    assert charts["losses"] == {
        "names": ["loss/test (b)", "loss/train (a)", "loss/train (b)", "loss/val (a)"],
        "error": None,
    }
    assert charts["accuracy"]["names"] == ["acc", "acc/low – acc/high"]  # the band: only a has its tags
    assert page.inner_text(".layout-bar .source") == "custom charts (the runs' layout)"
    assert problems == []


def test_an_added_chart_survives_a_reload_and_downloads_as_json(
    page: tuple[Any, list[str]], server: str, tmp_path: Path
) -> None:
    page, problems = page
    page.goto(f"{server}?view=scalars")
    _drawn(page, "losses", 4)
    _add_chart(page, "held out", "val$\ntest$")
    charts = _drawn(page, "held out", 2)
    assert charts["held out"]["names"] == ["loss/test (b)", "loss/val (a)"]
    edited = json.loads(parse_qs(urlsplit(page.url).query)["layout"][0])
    assert edited == {**LAYOUT, "custom": {"held out": ["Multiline", ["val$", "test$"]]}}
    page.reload()
    after = _drawn(page, "held out", 2)
    assert after["held out"] == charts["held out"] and set(after) == {"losses", "accuracy", "held out"}
    assert "edited here" in page.inner_text(".layout-bar .source")
    with page.expect_download() as download:
        page.click(".layout-bar [data-action=download]")
    saved = tmp_path / "layout.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text()) == edited  # what run.add_custom_scalars takes
    # Removed again, then imported from the file: drawn as it was.
    page.click(".layout-bar [data-action=edit]")
    page.locator(".layout-row").last.locator("[data-action=remove]").click()
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.layouts .title')].some((t) => t.textContent === 'held out')"
    )
    page.set_input_files(".layout-bar input[type=file]", str(saved))
    assert _drawn(page, "held out", 2)["held out"] == charts["held out"]
    page.click(".layout-bar [data-action=reset]")  # back to the runs' layout
    page.wait_for_function("() => !new URLSearchParams(location.search).has('layout')")
    _drawn(page, "losses", 4)
    # the added chart's card goes with the redraw that follows: wait for it, then the runs' two charts are all
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.layouts .title')].some((t) => t.textContent === 'held out')"
    )
    assert set(page.evaluate(LAYOUT_CHARTS)) == {"losses", "accuracy"}
    assert problems == []


def test_a_bad_regex_is_named_in_its_chart_and_the_others_draw(
    page: tuple[Any, list[str]], server: str, tmp_path: Path
) -> None:
    page, problems = page
    page.goto(f"{server}?view=scalars")
    _drawn(page, "losses", 4)
    _add_chart(page, "broken", "(unclosed")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.layouts .card.failed .layout-error')].some((e) => !e.hidden)"
    )
    charts = page.evaluate(LAYOUT_CHARTS)
    assert "'(unclosed' is not a regular expression" in charts["broken"]["error"]
    assert charts["broken"]["names"] == [] and len(charts["losses"]["names"]) == 4  # the others still draw
    row_error = page.locator(".layout-row").last.locator(".layout-error")
    assert "not a regular expression" in row_error.inner_text()
    # A file that is not a layout: named above the charts, the layout drawn before kept.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"c": {"band": ["Margin", ["acc"]]}}))
    page.set_input_files(".layout-bar input[type=file]", str(bad))
    # the error is put in once the file is read: wait for its words, not only for the element to show
    page.wait_for_function(
        """() => { const e = document.querySelector('.layout-bar .layout-error');
                   return !e.hidden && e.textContent.includes('names 3 tags'); }"""
    )
    assert "broken" in page.evaluate(LAYOUT_CHARTS)
    assert [p for p in problems if "status of 422" not in p] == []  # the browser logs the refused request


# ---- Evaluation: no text clipped or drawn over ---------------------------------------------------------------------

# For every chart shown: each non-empty SVG text's box (tick labels, axis titles, legend entries) inside the chart's
# box, and the legend's box clear of the x axis title and tick labels.
CLIPPED = """() => {
  const inside = (r, box) => r.left >= box.left - 1 && r.right <= box.right + 1 && r.top >= box.top - 1
    && r.bottom <= box.bottom + 1;
  const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const found = [];
  for (const card of document.querySelectorAll('.view[data-view=evaluation] .card[data-chart]')) {
    if (card.hidden) continue;
    const plot = card.querySelector('.plot');
    if (!plot) continue;
    const box = plot.getBoundingClientRect();
    for (const text of plot.querySelectorAll('svg text')) {
      const r = text.getBoundingClientRect();
      if (!text.textContent.trim() || !r.width) continue;
      if (!inside(r, box)) found.push(`${card.dataset.chart}: "${text.textContent}" clipped`);
    }
    const legend = plot.querySelector('.legend');
    if (!legend || !legend.getBoundingClientRect().width) continue;
    const l = legend.getBoundingClientRect();
    for (const text of plot.querySelectorAll('.g-xtitle text, .xtick text')) {
      if (text.textContent.trim() && meet(l, text.getBoundingClientRect())) {
        found.push(`${card.dataset.chart}: the legend over "${text.textContent}"`);
      }
    }
  }
  return found;
}"""

TABLE_CUT = """() => {
  const wrap = document.querySelector('[data-chart=comparison] .table-wrap');
  const box = wrap.getBoundingClientRect();
  const cut = [...wrap.querySelectorAll('th, td')].filter((c) => c.getBoundingClientRect().right > box.right + 1
    || c.scrollWidth > c.clientWidth + 1).map((c) => c.textContent);
  return {cut, overflow: wrap.scrollWidth - wrap.clientWidth};
}"""


def test_evaluation_text_is_never_clipped_nor_under_the_legend(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page  # 1,400 px: two charts a row, each about 550 px wide
    page.goto(f"{server}?view=evaluation")
    for chart in ("matrix", "roc", "pr", "scores", "sanity", "faithfulness"):
        page.wait_for_function(
            f"() => document.querySelector('[data-chart={chart}] .plot .legend, [data-chart={chart}] .plot .xtick')",
            timeout=15_000,
        )
    page.wait_for_selector("table.comparison th")
    assert page.evaluate(CLIPPED) == []
    assert page.evaluate(TABLE_CUT) == {"cut": [], "overflow": 0}
    headers = page.eval_on_selector_all("table.comparison th", "(hs) => hs.map((h) => h.textContent)")
    assert "rank corr., mean over the randomisation cascade\u00a0↓" in headers  # whole, wrapped in its cell
    assert problems == []


# ---- Features: natural size, several a row -------------------------------------------------------------------------


def test_features_several_a_row_at_a_whole_multiple_of_their_natural_size(
    page: tuple[Any, list[str]], server: str
) -> None:
    page, problems = page
    page.goto(f"{server}?view=features")
    page.wait_for_function(
        f"""() => {{ const imgs = [...document.querySelectorAll('.features img')];
                     return imgs.length === {UNITS} && imgs.every((i) => i.naturalWidth && i.dataset.scale); }}""",
        timeout=15_000,
    )
    sizes = page.eval_on_selector_all(
        ".features img",
        """(imgs) => imgs.map((i) => { const r = i.getBoundingClientRect();
            return {w: i.clientWidth, h: i.clientHeight, nw: i.naturalWidth, nh: i.naturalHeight, top: r.top,
                    scale: Number(i.dataset.scale)}; })""",
    )
    for size in sizes:
        assert (size["nw"], size["nh"]) == (28, 28)
        assert size["scale"] == CAP // 28 and (size["w"], size["h"]) == (28 * size["scale"],) * 2  # whole, capped
    rows = sorted({round(size["top"]) for size in sizes})
    assert len(rows) < len(sizes) / 2  # several a row, not one a row
    card = page.eval_on_selector(".features .card", "(c) => c.getBoundingClientRect().width")
    content = page.eval_on_selector(".view[data-view=features] .content", "(c) => c.clientWidth")
    assert card < content / 3  # the card holds its picture, not the full width
    assert problems == []
