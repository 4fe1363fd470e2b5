"""The board's display habits in headless Chromium: stable run colours, natural order, single points drawn, the
hidden attribute, tag filter and groups, the whole state in the URL, dark mode, full-resolution CSV and JSON,
pictures at their natural size, and the HParams view (table, parallel coordinates, scatter, config diff).

One small store and one page for the file (Chromium starts once); ``problems`` collects console and page errors.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CHROMIUM, chromium, serving, watched_page

import deepscope as ds
from deepscope.track.records import Image

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")

from deepscope.dashboard import create_app

CAPTION = "a <b>caption</b>, as text"
LONG = 5000  # points of long/sine: the page draws at most 2,000, a download must hold every one
SPIKY = 100
NORMS = (0, 2, 10, 20)  # grad_norm/<i>: as text 0, 10, 2, 20
CONFIGS = {
    "lr-0.1": {"lr": 0.1, "optim": {"name": "sgd", "momentum": 0.9}, "layers": [8, 8]},
    "lr-0.01": {"lr": 0.01, "optim": {"name": "adam", "momentum": 0.9}, "layers": [8, 8]},
    "lr-0.001": {"lr": 0.001, "optim": {"name": "adam", "momentum": 0.0}, "layers": [16]},
}


def _loss(lr: float) -> np.ndarray:
    return np.exp(-np.arange(10) * lr * 5) + lr


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("views")
    for name, config in CONFIGS.items():
        with ds.Run(root / name, config=config) as run:
            for step, value in enumerate(_loss(config["lr"])):  # type: ignore[arg-type]
                run.log({"train/loss": float(value)}, step=step)
            run.log({"test/acc": 1 - config["lr"]}, step=9)  # type: ignore[operator]
    with ds.Run(root / "plain") as run:  # no config: not in the HParams view
        for i in NORMS:
            run.log({f"grad_norm/{i}": float(i)}, step=0)
            run.log({f"grad_norm/{i}": float(i) + 1}, step=1)
        steps = np.arange(LONG)
        run.log_series("long/sine", steps, np.sin(steps / 50.0))
        spiky = np.random.default_rng(1).random(SPIKY)
        spiky[SPIKY // 2] = 1000.0  # one outlier: with "ignore outliers" the y range is the others'
        run.log_series("long/spiky", np.arange(SPIKY), spiky)
        pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        run.log_records([Image("samples", 0, pixels, caption=CAPTION)])
        digit = np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)  # 8 times would overflow a card
        run.log_records([Image("digit", 0, digit)])
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


def _charts(page: Any) -> list[str]:
    return page.eval_on_selector_all(".view[data-view=scalars] .card[data-tag]", "(cs) => cs.map((c) => c.dataset.tag)")


def _scalars(page: Any, server: str, query: str = "", tag: str = "train/loss") -> None:
    page.goto(f"{server}?view=scalars{query}")
    page.wait_for_function(
        """(tag) => { const gd = document.querySelector(`.card[data-tag="${tag}"] .plot`);
                      return gd && gd.data && gd.data.length > 0; }""",
        arg=tag,
        timeout=15_000,
    )


def test_run_colours_follow_the_name_not_the_list(page: tuple[Any, list[str]], server: str, root: Path) -> None:
    page, problems = page
    _scalars(page, server)
    swatches = (
        "() => Object.fromEntries([...document.querySelectorAll('.runlist label')].map((l) => [l.title, "
        "getComputedStyle(l.querySelector('.swatch')).backgroundColor]))"
    )
    before = page.evaluate(swatches)
    assert len(set(before.values())) == len(before) == 4  # distinct for these names
    lines = page.evaluate(
        """() => document.querySelector('.card[data-tag="train/loss"] .plot').data
                 .filter((t) => t.showlegend !== false).map((t) => [t.meta, t.line.color])"""
    )
    hexes = {name: color for name, color in lines}
    # The chart's line has the swatch's colour (as rgb()).
    for name, color in hexes.items():
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
        assert before[name] == f"rgb({r}, {g}, {b})"
    with ds.Run(root / "aaa-first-by-name") as run:  # sorts first: with colours by position all would shift
        run.log({"train/loss": 1.0}, step=0)
    page.wait_for_function("() => document.querySelectorAll('.runlist label').length === 5", timeout=10_000)
    after = page.evaluate(swatches)
    assert {name: after[name] for name in before} == before
    assert not problems


def test_tags_in_natural_order_grouped_by_prefix_and_filtered(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server)
    groups = page.eval_on_selector_all(".tag-group", "(gs) => gs.map((g) => g.dataset.group)")
    assert groups == ["grad_norm", "long", "test", "train"]
    in_group = page.eval_on_selector_all(
        ".tag-group[data-group=grad_norm] .card[data-tag]", "(cs) => cs.map((c) => c.dataset.tag)"
    )
    assert in_group == [f"grad_norm/{i}" for i in NORMS]  # 2 before 10, as counted
    # A section folds away and comes back.
    page.click(".tag-group[data-group=grad_norm] > summary")
    assert not page.is_visible('.card[data-tag="grad_norm/2"]')
    page.click(".tag-group[data-group=grad_norm] > summary")
    assert page.is_visible('.card[data-tag="grad_norm/2"]')
    # The tag filter: a regex over tag names.
    page.fill(".view[data-view=scalars] input[placeholder^='tag regex']", "norm/(2|10)$")
    page.wait_for_function("() => document.querySelectorAll('.card[data-tag]').length === 2")
    assert sorted(_charts(page)) == ["grad_norm/10", "grad_norm/2"]
    assert "tags=norm" in page.url
    page.fill(".view[data-view=scalars] input[placeholder^='tag regex']", "nothing-like-this")
    page.wait_for_selector(".view[data-view=scalars] p.empty")
    assert "tag filter" in page.inner_text(".view[data-view=scalars] p.empty")
    assert not problems


# Counts, in the page, plotly's draws into a chart not in the document (plotly sizes a chart from its element: one
# drawn detached is drawn at plotly's default size, then whole again when resized) and the resizes asked of plotly.
PLOTLY_CALLS = """(() => {
  window.plotlyCalls = { drawn: 0, detached: 0, resized: 0 };
  let plotly;
  Object.defineProperty(window, "Plotly", { configurable: true, get: () => plotly, set(value) {
    plotly = value;
    const { react } = value;
    value.react = function (gd, ...rest) {
      window.plotlyCalls.drawn += 1;
      if (!gd.isConnected) window.plotlyCalls.detached += 1;
      return react.call(this, gd, ...rest);
    };
    const { resize } = value.Plots;
    value.Plots.resize = function (...args) {
      window.plotlyCalls.resized += 1;
      return resize.apply(this, args);
    };
  } });
})();"""


def test_a_chart_is_drawn_once_in_the_page_at_its_size(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    page.add_init_script(PLOTLY_CALLS)
    _scalars(page, server)
    # The old page's redraw came 100 ms after a tag group's toggle event, queued when the group was made open.
    page.wait_for_timeout(400)
    calls = page.evaluate("() => window.plotlyCalls")
    assert calls["drawn"] >= 1 + len(NORMS) and calls["detached"] == 0 and calls["resized"] == 0, calls
    size = page.evaluate(
        """() => { const gd = document.querySelector('.card[data-tag="train/loss"] .plot');
                   return [gd._fullLayout.width, gd._fullLayout.height, gd.clientWidth, gd.clientHeight]; }"""
    )
    assert size[:2] == size[2:]
    # A section folded and opened again redraws its charts at their size (the window may have changed meanwhile).
    page.click(".tag-group[data-group=grad_norm] > summary")
    page.click(".tag-group[data-group=grad_norm] > summary")
    page.wait_for_function("(n) => window.plotlyCalls.resized === n", arg=len(NORMS), timeout=5_000)
    assert not problems


TWO_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"

# The chart's legend: its entries, and the heights of the plot area and of the legend, in px; the widths of its
# smoothed lines (drawn at full opacity) and of its faint raw lines, as plotly drew them (stroke-width of each path),
# and whether its lines are on a canvas.
LEGEND = """() => { const gd = document.querySelector('.card[data-tag="train/loss"] .plot');
    const legend = gd.querySelector('.legend');
    const widths = (opaque) => [...new Set([...gd.querySelectorAll('.scatterlayer .trace')]
        .filter((t) => t.querySelector('path.js-line'))
        .filter((t) => (Number(t.style.opacity || 1) === 1) === opaque)
        .map((t) => parseFloat(t.querySelector('path.js-line').style.strokeWidth)))];
    return {entries: gd.querySelectorAll('.legendtext').length, plot: gd._fullLayout._size.h,
            legend: legend ? legend.getBoundingClientRect().height : 0,
            smoothed: widths(true), raw: widths(false), canvas: !!gd.querySelector('canvas.lines')}; }"""

# The canvas of the train/loss chart at a run's smoothed point at `step`, where plotly's axes put it (`point`, px
# from the plot area's corner): the most opaque pixel within 2 px, [r, g, b, a]; and the canvas's top-right corner
# pixel.
CANVAS_AT = """([run, step]) => { const gd = document.querySelector('.card[data-tag="train/loss"] .plot');
    const canvas = gd.querySelector('canvas.lines');
    const trace = gd.lineTraces.find((t) => t.meta === run && t.opacity === 1);
    const i = trace.x.indexOf(step);
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const scale = canvas.width / canvas.clientWidth;
    const [px, py] = [xa.l2p(xa.d2l(trace.x[i])) * scale, ya.l2p(ya.d2l(trace.y[i])) * scale];
    const context = canvas.getContext('2d');
    const near = context.getImageData(Math.round(px) - 2, Math.round(py) - 2, 5, 5).data;
    let best = [0, 0, 0, 0];
    for (let k = 0; k < near.length; k += 4) if (near[k + 3] > best[3]) best = [...near.slice(k, k + 4)];
    const corner = [...context.getImageData(canvas.width - 3, 2, 1, 1).data];
    return {at: best, point: [px / scale, py / scale], corner,
            size: [canvas.clientWidth, canvas.clientHeight, gd._fullLayout._size.w, gd._fullLayout._size.h]}; }"""


def test_a_sweep_of_many_runs_is_named_by_the_run_list_and_drawn_on_a_canvas(
    page: tuple[Any, list[str]], server: str, tmp_path: Path
) -> None:
    page, problems = page
    _scalars(page, server)
    # A few runs (the configured ones, and one more if the colour test ran first): the chart names them itself, and
    # its lines are plotly's SVG (a legend entry shows its line).
    page.wait_for_function(f"() => ({LEGEND})().entries >= {len(CONFIGS)}", timeout=10_000)
    few = page.evaluate(LEGEND)
    assert len(CONFIGS) <= few["entries"] <= len(CONFIGS) + 1 and few["legend"] > 0
    assert (few["smoothed"], few["raw"], few["canvas"]) == ([2], [1], False)
    # A sweep: a legend of 20 runs would be taller than the plot it labels and cover its axis title.
    sweep = tmp_path / "sweep"
    for k in range(20):
        with ds.Run(sweep / f"lr-{k:02d}") as run:
            loss = _loss(0.01 * (k + 1))
            if k == 19:
                loss[4] = 5.0  # a spike its smoothed line does not reach
            run.log_series("train/loss", np.arange(10), loss)
    with serving(create_app(sweep)) as url:
        _scalars(page, f"{url}/")
        page.wait_for_function(
            """() => (document.querySelector('.card[data-tag="train/loss"] .plot').lineTraces || [])
                     .filter((t) => t.showlegend !== false).length === 20""",
            timeout=15_000,
        )
        page.evaluate(TWO_FRAMES)
        many = page.evaluate(LEGEND)
        assert many["entries"] == 0 and many["legend"] == 0
        assert many["plot"] >= few["plot"]  # the plot keeps its height
        assert page.eval_on_selector_all(".runlist label .swatch", "(s) => s.length") == 20  # named there
        # Its lines are on one canvas over the plot area, none an SVG path (plotly's draw and the browser's raster
        # of 40 paths were most of a first visit without a GPU: bench/bench_board_page.py), 1 px wide.
        assert (many["smoothed"], many["raw"], many["canvas"]) == ([], [], True)
        widths = page.evaluate(
            "() => [...new Set(document.querySelector('.card[data-tag=\"train/loss\"] .plot').lineTraces"
            ".map((t) => t.line.width))]"
        )
        assert widths == [1]
        # Each run's line passes where plotly's axes put its points, in its colour; where no run is, nothing.
        swatch = page.eval_on_selector(
            '.runlist label[title="lr-00"] .swatch', "(s) => getComputedStyle(s).backgroundColor"
        )
        expected = [int(v) for v in swatch[swatch.index("(") + 1 : -1].split(",")]
        for name in ("lr-00", "lr-07", "lr-19"):
            pixels = page.evaluate(CANVAS_AT, [name, 9])
            assert pixels["at"][3] > 100, (name, pixels)
        pixels = page.evaluate(CANVAS_AT, ["lr-00", 9])  # the highest line at step 9, far from the others
        assert max(abs(a - b) for a, b in zip(pixels["at"][:3], expected, strict=True)) < 40, pixels
        assert pixels["corner"][3] == 0 and pixels["size"][:2] == pixels["size"][2:]
        # The faint raw lines are only on the canvas, yet the y axis ranges over them (the spike), as over SVG lines.
        top = page.evaluate(
            "() => document.querySelector('.card[data-tag=\"train/loss\"] .plot')._fullLayout.yaxis.range[1]"
        )
        assert top > 5.0
        # Zoomed in (as a drag does), the lines follow the axes.
        page.evaluate(
            "() => Plotly.relayout(document.querySelector('.card[data-tag=\"train/loss\"] .plot'),"
            " {'xaxis.range': [4, 8]})"
        )
        page.wait_for_timeout(300)
        page.evaluate(TWO_FRAMES)
        assert page.evaluate(CANVAS_AT, ["lr-00", 6])["at"][3] > 100
        # The cursor table (the page's own: plotly holds no trace of a run): at the step under the pointer, each
        # run's smoothed value (its faint raw line is not listed), the top line first, as many as fit the chart's
        # height, those nearest the pointer; a vertical line marks the step.
        plot = '.card[data-tag="train/loss"] .plot'
        box = page.eval_on_selector(f"{plot} .nsewdrag", "(n) => n.getBoundingClientRect()")
        at = page.evaluate(CANVAS_AT, ["lr-00", 6])["point"]  # lr-00's smoothed point at step 6, in page px
        page.mouse.move(box["x"] + at[0], box["y"] + at[1])
        page.wait_for_selector(f"{plot} .cursor-table:not([hidden])")
        table = page.eval_on_selector(
            f"{plot} .cursor-table",
            """(t) => ({head: t.querySelector('.head').textContent,
                       names: [...t.querySelectorAll('.row .name')].map((n) => n.textContent),
                       values: [...t.querySelectorAll('.row .value')].map((n) => Number(n.textContent)),
                       nearest: t.querySelector('.row.nearest .name').textContent,
                       more: t.querySelector('.more')?.textContent ?? ''})""",
        )
        smoothed = page.evaluate(
            f"""() => Object.fromEntries(document.querySelector('{plot}').lineTraces
                .filter((t) => t.opacity === 1).map((t) => [t.meta, t.y[t.x.indexOf(6)]]))"""
        )
        assert table["head"] == "step 6" and table["nearest"] == "lr-00"
        assert table["values"] == sorted(table["values"], reverse=True)  # the top line first
        for name, value in zip(table["names"], table["values"], strict=True):
            assert value == pytest.approx(smoothed[name], rel=1e-6)
        listed = len(table["names"])
        assert 0 < listed <= 20 and (listed == 20) == (table["more"] == ""), table
        if listed < 20:  # those nearest the pointer: lr-00's neighbours in value at step 6
            nearest = sorted(smoothed, key=lambda name: abs(smoothed[name] - smoothed["lr-00"]))[:listed]
            assert sorted(table["names"]) == sorted(nearest) and table["more"].startswith(f"{20 - listed} more")
        assert page.is_visible(f"{plot} .cursor-line")
        page.mouse.move(box["x"] - 30, box["y"] - 30)  # off the plot: the table goes
        page.wait_for_selector(f"{plot} .cursor-table", state="hidden")
        # Ten runs unticked: a chart of ten runs, plotly's SVG lines and legend again; ticked again: the canvas.
        boxes = [f'.runlist label[title="lr-{k:02d}"] input' for k in range(10, 20)]
        for box_ in boxes:
            page.uncheck(box_)
        page.wait_for_function(f"() => ({LEGEND})().entries === 10 && !({LEGEND})().canvas", timeout=10_000)
        assert page.evaluate(f"() => ({LEGEND})().smoothed") == [2]
        for box_ in boxes:
            page.check(box_)
        page.wait_for_function(f"() => ({LEGEND})().canvas && ({LEGEND})().entries === 0", timeout=10_000)
        page.evaluate(TWO_FRAMES)
        assert page.evaluate(CANVAS_AT, ["lr-19", 6])["at"][3] > 100  # still zoomed in to steps 4-8
        # The SVG download draws the lines (plotly, off the page).
        with page.expect_download() as download:
            page.click('.card[data-tag="train/loss"] button[title="download the chart as SVG"]')
        download.value.save_as(tmp_path / "sweep.svg")
        assert (tmp_path / "sweep.svg").read_text().count("js-line") == 40
    assert not problems


def test_a_single_point_is_drawn_as_a_marker(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server)
    page.wait_for_function("() => document.querySelector('.card[data-tag=\"test/acc\"] .plot')?.data?.length > 0")
    modes = page.evaluate("() => document.querySelector('.card[data-tag=\"test/acc\"] .plot').data.map((t) => t.mode)")
    assert modes and all("markers" in mode for mode in modes)
    drawn = page.evaluate("() => document.querySelectorAll('.card[data-tag=\"test/acc\"] .point').length")
    assert drawn >= len(CONFIGS)  # plotly drew a marker per run
    longer = page.evaluate(
        "() => document.querySelector('.card[data-tag=\"train/loss\"] .plot').data"
        ".find((t) => t.meta === 'lr-0.1').mode"
    )
    assert longer == "lines"  # ten points: a line
    assert not problems


def test_hidden_wins_over_a_class_display(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server)
    shown = page.evaluate(
        """() => ['hover-card', 'runlist', 'card-head', 'grid'].map((name) => {
                 const node = document.createElement('div');
                 node.className = name;
                 node.hidden = true;
                 document.body.append(node);
                 const display = getComputedStyle(node).display;
                 node.remove();
                 return display; })"""
    )
    assert shown == ["none"] * 4
    assert not problems


def test_the_view_state_lives_in_the_url(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server, "&smoothing=0.3&off=lr-0.1&tags=train&runs=lr")
    assert page.input_value(".view[data-view=scalars] input[type=range]") == "0.3"
    ticked = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.runlist label')].map((l) => "
        "[l.title, l.querySelector('input').checked]))"
    )
    assert ticked == {"lr-0.001": True, "lr-0.01": True, "lr-0.1": False}  # "plain" filtered out by runs=lr
    assert _charts(page) == ["train/loss"]
    shown = page.evaluate(
        "() => document.querySelector('.card[data-tag=\"train/loss\"] .plot').data.map((t) => t.meta)"
    )
    assert "lr-0.1" not in shown
    # Change it in the page, reload: the same state.
    page.uncheck(".runlist label[title='lr-0.01'] input")
    page.evaluate(
        """() => { const s = document.querySelector('.view[data-view=scalars] input[type=range]');
                   s.value = '0.75'; s.dispatchEvent(new Event('input')); }"""
    )
    page.select_option(".view[data-view=scalars] aside select", "relative")
    page.reload()
    page.wait_for_selector(".runlist label")
    assert page.input_value(".view[data-view=scalars] input[type=range]") == "0.75"
    assert page.input_value(".view[data-view=scalars] aside select") == "relative"
    assert not page.is_checked(".runlist label[title='lr-0.01'] input")
    assert not page.is_checked(".runlist label[title='lr-0.1'] input")
    assert page.input_value(".view[data-view=scalars] input[placeholder^='tag regex']") == "train"
    assert not problems


def test_dark_mode_follows_the_browser_and_the_toggle(browser: Any, server: str) -> None:
    context = browser.new_context(color_scheme="dark", viewport={"width": 1200, "height": 800})
    page = context.new_page()
    try:
        _scalars(page, server)
        background = "() => getComputedStyle(document.body).backgroundColor"
        font = "() => document.querySelector('.card[data-tag=\"train/loss\"] .plot')._fullLayout.font.color"
        assert page.evaluate(background) == "rgb(13, 17, 23)"
        assert page.evaluate(font) == "#e6edf3"
        page.click("#theme")  # auto -> dark (as the browser)
        page.click("#theme")  # dark -> light
        assert page.inner_text("#theme") == "theme: light"
        assert page.evaluate(background) == "rgb(255, 255, 255)"
        page.wait_for_function(f"() => ({font})() === '#1f2328'")
        page.reload()  # the choice is remembered
        page.wait_for_selector(".card[data-tag]")
        assert page.evaluate(background) == "rgb(255, 255, 255)" and page.inner_text("#theme") == "theme: light"
        page.click("#theme")  # light -> auto: the browser's dark again
        assert page.evaluate(background) == "rgb(13, 17, 23)"
    finally:
        context.close()


def test_downloads_hold_every_point_not_only_the_drawn_ones(
    page: tuple[Any, list[str]], server: str, tmp_path: Path
) -> None:
    page, problems = page
    _scalars(page, server, "&tags=long", tag="long/sine")
    drawn = page.evaluate("() => document.querySelector('.card[data-tag=\"long/sine\"] .plot').data[0].x.length")
    assert drawn <= 2000 < LONG
    with page.expect_download() as download:
        page.click('.card[data-tag="long/sine"] button.csv')
    download.value.save_as(tmp_path / "sine.csv")
    with open(tmp_path / "sine.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["run", "tag", "step", "epoch", "wall_time", "value"]
    assert len(rows) == LONG + 1
    np.testing.assert_allclose([float(r[5]) for r in rows[1:]], np.sin(np.arange(LONG) / 50.0))
    with page.expect_download() as download:
        page.click('.card[data-tag="long/sine"] button.json')
    download.value.save_as(tmp_path / "sine.json")
    data = json.loads((tmp_path / "sine.json").read_text())
    (series,) = data["series"]
    assert data["tag"] == "long/sine" and series["run"] == "plain" and series["steps"] == list(range(LONG))
    np.testing.assert_allclose(series["values"], np.sin(np.arange(LONG) / 50.0))
    assert not problems


def test_the_images_run_filter_is_in_the_url_too(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    page.goto(f"{server}?view=images&runs=nothing-like-this")
    page.wait_for_selector(".view[data-view=images] aside input")
    page.wait_for_timeout(500)
    assert page.input_value(".view[data-view=images] aside input") == "nothing-like-this"
    assert page.evaluate("() => document.querySelectorAll('.images .card').length") == 0
    page.fill(".view[data-view=images] aside input", "pla")
    page.wait_for_selector(".images .card")
    assert "runs=pla" in page.url
    assert not problems


def test_pictures_at_their_natural_size_upscaled_by_a_whole_factor(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    page.set_viewport_size({"width": 760, "height": 900})  # grid cards near their 220 px minimum
    page.goto(f"{server}?view=images")
    samples, digit = "img[alt='samples of plain']", "img[alt='digit of plain']"
    for img in (samples, digit):
        page.wait_for_function(f"() => document.querySelector(`.images {img}`)?.dataset.scale")
    width, height, scale = page.evaluate(
        f"() => {{ const i = document.querySelector(`.images {samples}`);"
        " return [i.clientWidth, i.clientHeight, Number(i.dataset.scale)]; }"
    )
    assert scale == 8 and (width, height) == (16 * 8, 12 * 8)  # 16 x 12 pixels, 8 times: square, sharp pixels
    # 28 x 28 (Fashion-MNIST): 8 times is wider than its grid card; the largest whole factor that fits, not squeezed.
    width, scale, room = page.evaluate(
        f"() => {{ const i = document.querySelector(`.images {digit}`), card = i.parentElement;"
        " const s = getComputedStyle(card);"
        " return [i.clientWidth, Number(i.dataset.scale),"
        " card.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)]; }"
    )
    assert scale < 8 and width == 28 * scale and 28 * scale <= room < 28 * (scale + 1), (width, scale, room)
    caption = page.inner_text(f".images .card:has({samples}) p.caption")
    assert caption == CAPTION  # shown under the picture, as text
    assert page.evaluate("() => document.querySelectorAll('.images b').length") == 0
    assert not problems


# ---- hparams ------------------------------------------------------------------------------------------------------


def _hparams(page: Any, server: str, query: str = "") -> None:
    page.goto(f"{server}?view=hparams{query}")
    page.wait_for_selector("table.hparams tbody tr", timeout=15_000)


def _table(page: Any) -> tuple[list[str], list[list[str]]]:
    head = page.eval_on_selector_all("table.hparams:not(.diff) th", "(ths) => ths.map((t) => t.dataset.column)")
    rows = page.eval_on_selector_all(
        "table.hparams:not(.diff) tbody tr", "(trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim()))"
    )
    return head, rows


def test_hparams_table_of_configured_runs_with_their_metrics(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _hparams(page, server)
    head, rows = _table(page)
    assert head == [
        "run",
        "config:layers",
        "config:lr",
        "config:optim.momentum",
        "config:optim.name",
        "metric:test/acc",
        "metric:train/loss",
    ]
    assert [row[0] for row in rows] == ["lr-0.001", "lr-0.01", "lr-0.1"]  # "plain" has no config
    by_run = {row[0]: row for row in rows}
    for name, config in CONFIGS.items():
        row = by_run[name]
        assert row[1] == json.dumps(config["layers"]) and float(row[2]) == config["lr"]
        assert row[4] == config["optim"]["name"]  # type: ignore[index]
        assert math.isclose(float(row[6]), _loss(config["lr"])[-1], rel_tol=1e-3)  # type: ignore[arg-type]
    # The lowest value instead of the final one; sorted by it, descending.
    page.select_option(".view[data-view=hparams] aside select >> nth=0", "max")
    page.wait_for_function(
        "() => document.querySelector('th[data-column=\"metric:train/loss\"]').textContent.includes('max')"
    )
    _, rows = _table(page)
    assert math.isclose(float(rows[0][6]), _loss(0.001).max(), rel_tol=1e-3)
    page.click('th[data-column="config:lr"]')
    page.click('th[data-column="config:lr"]')
    _, rows = _table(page)
    assert [row[0] for row in rows] == ["lr-0.1", "lr-0.01", "lr-0.001"]
    assert "hp_sort=config%3Alr%3Adesc" in page.url and "hp_agg=max" in page.url
    # Filtered by a value.
    page.fill(".view[data-view=hparams] aside input[type=text]", "adam")
    page.wait_for_function("() => document.querySelectorAll('table.hparams:not(.diff) tbody tr').length === 2")
    _, rows = _table(page)
    assert sorted(row[0] for row in rows) == ["lr-0.001", "lr-0.01"]
    # Parallel coordinates and the scatter draw the rows shown.
    parallel = "document.querySelector('[data-chart=parcoords] .plot')"
    page.wait_for_function(f"() => {parallel}.data?.[0]?.dimensions?.[1]?.values?.length === 2")
    dims = page.evaluate(f"() => {parallel}.data[0].dimensions")
    assert [d["label"] for d in dims][:2] == ["layers", "lr"]
    assert sorted(dims[1]["values"]) == [0.001, 0.01]
    assert dims[3]["ticktext"] == ["adam"]  # a category axis for text values
    xs = page.evaluate("() => document.querySelector('[data-chart=scatter] .plot').data[0].x")
    assert sorted(xs) == ["[16]", "[8, 8]"]  # the first hyperparameter: layers, as categories
    assert not problems


def test_hparams_csv_and_metric_choice(page: tuple[Any, list[str]], server: str, tmp_path: Path) -> None:
    page, problems = page
    _hparams(page, server, "&hp_metrics=test/acc")
    head, _ = _table(page)
    assert head[-1] == "metric:test/acc" and "metric:train/loss" not in head
    with page.expect_download() as download:
        page.click("[data-chart=hparams-table] button.csv")
    download.value.save_as(tmp_path / "hparams.csv")
    with open(tmp_path / "hparams.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:6] == ["run", "layers", "lr", "optim.momentum", "optim.name", "test/acc (final)"]
    assert rows[0][6:] == ["test/acc (min)", "test/acc (max)", "test/acc (last)", "test/acc (step)"]
    assert {r[0]: float(r[5]) for r in rows[1:]} == {name: 1 - c["lr"] for name, c in CONFIGS.items()}  # type: ignore[operator]
    page.check(".metric-list label[title='train/loss'] input")
    page.wait_for_selector('th[data-column="metric:train/loss"]')
    assert "hp_metrics=test%2Facc&hp_metrics=train%2Floss" in page.url
    assert not problems


def test_config_diff_of_two_runs(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _hparams(page, server, "&hp_a=lr-0.1&hp_b=lr-0.001")
    page.wait_for_selector("table.diff tbody tr")
    rows = page.eval_on_selector_all(
        "table.diff tbody tr", "(trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim()))"
    )
    assert rows == [
        ["layers", "[8, 8]", "[16]"],
        ["lr", "0.1", "0.001"],
        ["optim.momentum", "0.9", "0"],
        ["optim.name", "sgd", "adam"],
    ]
    assert "4 differ · 0 equal" in page.inner_text("[data-chart=config-diff] .note")
    page.select_option("aside select >> nth=-1", "lr-0.01")  # lr-0.1 against lr-0.01: the optimiser, the rate
    page.wait_for_function("() => document.querySelectorAll('table.diff tbody tr').length === 2")
    names = page.eval_on_selector_all("table.diff tbody tr", "(trs) => trs.map((tr) => tr.dataset.name)")
    assert names == ["lr", "optim.name"]
    assert not problems


def test_hparams_asks_at_once_and_draws_its_table_before_plotly(page: tuple[Any, list[str]], server: str) -> None:
    """The runs' overview and plotly.js held back: the view asks for its data anyway (not after the overview); once
    the overview comes, the table is drawn without plotly.js; the charts once it arrives."""
    page, problems = page
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url.removeprefix(server).split("?")[0]))
    plotly: list[Any] = []
    overview: list[Any] = []
    # plotly's basic build held back (the page's first); the whole one (parallel coordinates) is asked for after it
    page.route("**/static/plotly*.min.js*", lambda route: route.continue_() if plotly else plotly.append(route))
    page.route("**/api/overview*", lambda route: overview.append(route))
    page.goto(f"{server}?view=hparams", wait_until="commit")
    page.wait_for_function("() => performance.getEntriesByType('resource').some((e) => e.name.includes('api/hparams'))")
    assert len(overview) == 1 and "api/hparams" in requested
    overview[0].continue_()
    rows = "() => document.querySelectorAll('table.hparams:not(.diff) tbody tr').length"
    page.wait_for_function(f"() => ({rows})() === {len(CONFIGS)}", timeout=15_000)
    assert page.evaluate("() => window.Plotly === undefined") and len(plotly) == 1
    assert "static/plotly-basic.min.js" in requested and "static/plotly.min.js" not in requested
    assert page.evaluate("() => !document.querySelector('[data-chart=parcoords] .plot').data")  # not yet
    plotly[0].continue_()
    parallel = "document.querySelector('[data-chart=parcoords] .plot')"
    page.wait_for_function(f"() => {parallel}.data?.[0]?.dimensions?.[0]?.values?.length === {len(CONFIGS)}")
    assert requested.count("static/plotly.min.js") == 1
    assert requested.count("api/hparams") == 1  # the early answer is the one drawn: not asked again
    assert not problems


def _y_range(page: Any, selector: str) -> list[float]:
    return page.evaluate(f"() => document.querySelector('{selector} .plot')._fullLayout.yaxis.range")


def test_ignore_outliers_ranges_y_over_the_5th_to_95th_percentiles(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server, "&tags=spiky&smoothing=0", tag="long/spiky")
    card = '.card[data-tag="long/spiky"]'
    assert _y_range(page, card)[1] > 1000  # the spike sets the range
    page.check(".view[data-view=scalars] aside label.inline:has-text('ignore outliers') input")
    assert "outliers=1" in page.url
    page.wait_for_function(f"() => document.querySelector('{card} .plot')._fullLayout.yaxis.range[1] < 2")
    values = np.random.default_rng(1).random(SPIKY)
    values[SPIKY // 2] = 1000.0
    low, high = np.percentile(values, [5, 95])
    pad = (high - low) * 0.1
    np.testing.assert_allclose(_y_range(page, card), [low - pad, high + pad], rtol=1e-9)
    page.reload()  # in the URL: the same range after a reload
    page.wait_for_function(f"() => document.querySelector('{card} .plot')?._fullLayout?.yaxis?.range?.[1] < 2")
    page.uncheck(".view[data-view=scalars] aside label.inline:has-text('ignore outliers') input")
    page.wait_for_function(f"() => document.querySelector('{card} .plot')._fullLayout.yaxis.range[1] > 1000")
    assert "outliers" not in page.url
    assert not problems


def test_pinned_charts_are_copied_above_and_kept_in_the_url(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server)
    assert not page.is_visible(".pinned-section")
    page.click('.card[data-tag="grad_norm/10"] button.pin')
    pinned = '.pinned-section .card[data-pinned="grad_norm/10"]'
    page.wait_for_function(f"() => document.querySelector('{pinned} .plot')?.data?.length > 0")
    assert "pin=grad_norm%2F10" in page.url
    assert _charts(page).count("grad_norm/10") == 1  # a copy: the tag's own chart stays in its section
    # The copy draws the same lines, above every section, and stays whatever the tag filter.
    lines = "(sel) => document.querySelector(sel).data.map((t) => [t.meta, t.y])"
    assert page.evaluate(lines, f"{pinned} .plot") == page.evaluate(lines, '.card[data-tag="grad_norm/10"] .plot')
    page.fill(".view[data-view=scalars] input[placeholder^='tag regex']", "^train")
    page.wait_for_function("() => !document.querySelector('.card[data-tag=\"grad_norm/10\"]')")
    assert page.is_visible(pinned)
    page.reload()
    page.wait_for_function(f"() => document.querySelector('{pinned} .plot')?.data?.length > 0")
    page.click(f"{pinned} button.pin")  # unpin
    page.wait_for_selector(".pinned-section", state="hidden")
    assert "pin=" not in page.url
    assert not problems


def test_the_cursor_lists_every_runs_value_at_the_step(page: tuple[Any, list[str]], server: str) -> None:
    page, problems = page
    _scalars(page, server, "&smoothing=0")
    card = '.card[data-tag="train/loss"]'
    assert page.evaluate(f"() => document.querySelector('{card} .plot')._fullLayout.hovermode") == "x unified"
    page.evaluate(f"() => Plotly.Fx.hover(document.querySelector('{card} .plot'), {{xval: 3}})")
    page.wait_for_selector(f"{card} .hoverlayer .legend", state="attached")
    shown = page.eval_on_selector(f"{card} .hoverlayer .legend", "(legend) => legend.textContent")
    for name, config in CONFIGS.items():  # every run at step 3, with its value
        assert name in shown
        assert f"{_loss(config['lr'])[3]:.4g}"[:4] in shown  # type: ignore[arg-type]
    assert not problems
