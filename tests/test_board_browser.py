"""The board's page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The real server (``deepscope.dashboard.create_app`` under uvicorn, in a thread) serves a store this file fills with
``ds.Run``; each tab must draw charts holding the logged data, the console must stay free of errors, a point
logged while the page is open must appear, and a run named like an HTML tag must show as text and run no script.
``.ci/run`` installs the browser and Playwright; elsewhere these tests skip, saying what is missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, CHROMIUM_ARGS, serving
from torch import nn

import deepscope as ds
from deepscope.track.records import Histogram, Image

HOSTILE = "<img src=x onerror=alert(1)>"
MARKDOWN = """# Results <i>x</i>

The **best** run used *warmup* and `lr=0.1`; see [the paper](https://arxiv.org/abs/1) or [this](javascript:alert(1)).
snake_case_names stay as they are.

- first
- second with `code`

1. one
2. two

```
for x in data: <b>print(x)</b>
```
"""
STEPS = 6
LONG = 5000  # more points than the page asks for (2000): the server downsamples until the user zooms in

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
pytest.importorskip("plotly", reason="plotly is missing (pip install -e '.[board]')")

from deepscope.dashboard import create_app, warm  # noqa: E402


def _train(run: ds.Run, activation: type[nn.Module], seed: int) -> None:
    """A few SGD steps of a tiny MLP, watched (histograms) and logged (scalars)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), activation(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    run.watch(model, every=1, bins=16)
    for step in range(STEPS):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.log({"train/loss": loss.item(), "train/acc": 1 / (1 + step)}, step=step)
    run.graph(model, x)


DEEP = 11  # layers: more than ten, so "10" must come after "9" in the picker, not after "1"


def _deep(run: ds.Run) -> None:
    """The weights of a stack of DEEP linear layers, watched for one step, and a histogram logged by hand under a
    tag that is HTML."""
    torch.manual_seed(3)
    model = nn.Sequential()
    model.add_module("blocks", nn.Sequential(*[nn.Linear(2, 2) for _ in range(DEEP)]))
    run.watch(model, every=1, bins=4, kinds="weight")
    model(torch.randn(3, 2))
    run.log_records([Histogram(HOSTILE, 0, 0.0, 1.0, np.array([1, 2]), count=3)])


FEATURE_STEPS = (0, 10, 20)


def _checkpoints_and_evolution(run: ds.Run) -> None:
    """Checkpoints of a tiny CNN whose first filters change between them, their evolution logged under
    ``features/conv/filters`` (with the noise score), and a maximisation strip at the last step only."""
    torch.manual_seed(4)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 6, 5))
    model.add_module("relu", nn.ReLU())
    for step in FEATURE_STEPS:
        with torch.no_grad():
            model.conv.weight.copy_(torch.randn_like(model.conv.weight).cumsum(2) if step else model.conv.weight)
        run.checkpoint(model, step=step)
    ds.features.evolution(run, lambda: model, "conv", what="filters", progress=False).log(run)
    strip = np.random.default_rng(5).integers(0, 256, (18, 35, 3), dtype=np.uint8)
    run.log_records([Image("features/conv/maximize", FEATURE_STEPS[-1], strip, caption="conv[0], conv[1]")])


CLASSES = ["cat", "dog", HOSTILE]
EXPLAINED = 4
_rng = np.random.default_rng(0)
TRUTH = _rng.integers(0, 3, 60)
PREDICTED = np.where(_rng.random(60) < 0.7, TRUTH, _rng.integers(0, 3, 60))
DOG_SCORES = np.clip(0.35 * (TRUTH == 1) + 0.65 * _rng.random(60), 0, 1)


def _evaluate(run: ds.Run) -> None:
    """A confusion matrix, one-vs-rest and binary PR curves, and two methods' explanations of a tiny CNN."""
    from deepscope.evaluate.classification import binary_report, confusion_matrix

    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    run.log_confusion_matrix(confusion_matrix(TRUTH, PREDICTED, classes=CLASSES), step=0)
    run.log_pr_curve(binary_report((TRUTH == 1).astype(int), DOG_SCORES), tag="dog-vs-rest", num_thresholds=21)
    x = torch.rand(EXPLAINED, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    found = [ds.explain(model, x, method=m) for m in ("saliency", "gradcam")]
    output = model(x).argmax(1)
    labels = output.clone()
    labels[0] = (labels[0] + 1) % 3  # one misclassified case for the filter
    run.log_explanations(found, labels=labels, predictions=output, classes=CLASSES)
    # Can these explanations be trusted: the sanity check, deletion curves and the comparison of the methods.
    TRUSTED["check"] = ds.sanity_check(model, x, methods=["saliency", "gradcam"])
    run.log_sanity_check(TRUSTED["check"])
    TRUSTED["deletion"] = [ds.faithfulness(model, x, e, steps=FAITH_STEPS) for e in found]
    run.log_faithfulness(TRUSTED["deletion"])
    TRUSTED["comparison"] = ds.compare_methods(
        model, x, methods=["saliency", "gradcam", _unfit], metrics=("deletion", "sanity"), steps=4, progress=False
    )
    run.log_method_comparison(TRUSTED["comparison"])


FAITH_STEPS = 8
TRUSTED: dict[str, Any] = {}


def _unfit(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A method that cannot explain the model: the table lists it last, the reason shown as text."""
    raise ds.BadInputError(f"cannot explain {HOSTILE}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ds.Run]]:
    root = tmp_path_factory.mktemp("runs")
    with ds.Run(root / "mlp-tanh") as run:
        _train(run, nn.Tanh, 0)
        rng = np.random.default_rng(0)
        run.log_records([Image("samples", step, rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)) for step in (0, 5)])
        run.note("a tanh MLP: <b>not bold</b>")
        run.note(MARKDOWN, tag="report")
    with ds.Run(root / "mlp-relu") as run:
        _train(run, nn.ReLU, 1)
    with ds.Run(root / "deep") as run:
        _deep(run)
    with ds.Run(root / HOSTILE) as run:
        run.log({"train/loss": 1.0}, step=0)
        run.log({"train/loss": math.nan}, step=1)  # a gap, not an error
    with ds.Run(root / "eval") as run:
        _evaluate(run)
    with ds.Run(root / "features-cnn") as run:
        _checkpoints_and_evolution(run)
    with ds.Run(root / "long") as run:
        steps = np.arange(LONG)
        run.log_series("zoom/sine", steps, np.sin(steps / 50.0))
    live = ds.Run(root / "live", flush_interval=0.05)
    for step in range(3):
        live.log({"train/loss": 2.0 - step}, step=step)
    live.flush()
    yield root, live
    live.close()


@pytest.fixture(scope="module")
def server(store: tuple[Path, ds.Run]) -> Iterator[str]:
    root, _ = store
    with serving(create_app(root)) as url:
        yield f"{url}/"


@pytest.fixture(scope="module")
def browser_page(server: str) -> Iterator[tuple[Any, list[str]]]:
    """One page for the whole file (Chromium starts once); ``problems`` collects console errors, page errors and
    dialogs (an ``alert`` would mean a run name ran as script)."""
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        def dialog(d: Any) -> None:
            problems.append(f"dialog {d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", dialog)
        page.goto(server)
        page.wait_for_selector("#tabs button", timeout=15_000)
        yield page, problems
        browser.close()


def _open(page: Any, view: str) -> None:
    page.click(f'#tabs button[data-view="{view}"]')
    page.wait_for_selector(f'.view[data-view="{view}"]', state="attached")


def _trace_lengths(page: Any, selector: str) -> list[int]:
    """Points per plotly trace of every chart under ``selector`` (plotly keeps its traces on the div as ``data``)."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].flatMap(
               (gd) => (gd.data || []).map((t) => (t.x || t.values || []).length))""",
        selector,
    )


def test_tabs_appear_only_for_data_that_exists(browser_page: tuple[Any, list[str]]) -> None:
    page, problems = browser_page
    tabs = page.eval_on_selector_all("#tabs button", "(bs) => bs.map((b) => b.dataset.view)")
    assert tabs == ["scalars", "distributions", "graph", "images", "features", "explanations", "evaluation", "text"]
    assert not problems


def test_scalars_overlay_runs_and_escape_names(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "scalars")
    page.wait_for_function(
        """() => { const gd = document.querySelector('.card[data-tag="train/acc"] .plot');
                   return gd && gd.data && gd.data.length >= 4; }""",
        timeout=10_000,
    )
    tags = page.eval_on_selector_all(".card[data-tag]", "(cs) => cs.map((c) => c.dataset.tag)")
    assert sorted(tags) == [
        "features/conv/filters/noise",
        "grad_norm/0",
        "grad_norm/2",
        "train/acc",
        "train/loss",
        "zoom/sine",
    ]
    # train/acc: two runs, each a faint raw line and its smoothed line, every logged step drawn.
    acc = page.evaluate(
        """() => document.querySelector('.card[data-tag="train/acc"] .plot').data.map(
               (t) => [t.meta, t.x.length, t.opacity])"""
    )
    assert sorted(acc) == sorted(
        [["mlp-relu", STEPS, 0.25], ["mlp-relu", STEPS, 1], ["mlp-tanh", STEPS, 0.25], ["mlp-tanh", STEPS, 1]]
    )
    # The smoothed line is TensorBoard's debiased EMA of the raw one (weight 0.6 by default).
    raw, smooth = page.evaluate(
        """() => { const d = document.querySelector('.card[data-tag="train/acc"] .plot').data
                       .filter((t) => t.meta === 'mlp-tanh');
                   return [d[0].y, d[1].y]; }"""
    )
    expected, last = [], 0.0
    for k, value in enumerate(raw, start=1):
        last = 0.6 * last + 0.4 * value
        expected.append(last / (1 - 0.6**k))
    np.testing.assert_allclose(smooth, expected, rtol=1e-9)
    np.testing.assert_allclose(raw, [1 / (1 + s) for s in range(STEPS)])
    # The hostile run's name is text: in the run list and the legend, with no element made from it.
    names = page.eval_on_selector_all(".runlist .run-name", "(ns) => ns.map((n) => n.textContent)")
    assert HOSTILE in names
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], main img').length") == 0
    loss = page.evaluate(
        """(name) => document.querySelector('.card[data-tag="train/loss"] .plot').data
               .filter((t) => t.meta === name)[0].y""",
        HOSTILE,
    )
    assert loss == [1.0, None]  # NaN arrives as "NaN" and is drawn as a gap
    # plotly reads names as a small HTML dialect: the legend must still show the name exactly as typed.
    legend = page.eval_on_selector_all(
        '.card[data-tag="train/loss"] .legendtext', "(ns) => ns.map((n) => n.textContent)"
    )
    assert HOSTILE in legend
    # The filter (a regex) narrows the runs shown.
    for regex, shown in (("^mlp-(tanh)$", {"mlp-tanh"}), ("^mlp-", {"mlp-tanh", "mlp-relu"})):
        page.fill("aside input[type=text]", regex)
        page.wait_for_function(
            """(shown) => { const names = document.querySelector('.card[data-tag="train/loss"] .plot').data
                                .map((t) => t.meta);
                            return names.length && names.every((n) => shown.includes(n))
                                && shown.every((n) => names.includes(n)); }""",
            arg=sorted(shown),
        )
    page.screenshot(path=str(tmp_path / "scalars.png"), full_page=True)
    page.fill("aside input[type=text]", "")
    assert not problems


def test_new_points_appear_while_the_page_is_open(
    browser_page: tuple[Any, list[str]], store: tuple[Path, ds.Run]
) -> None:
    page, problems = browser_page
    _, live = store
    _open(page, "scalars")
    count = """() => { const gd = document.querySelector('.card[data-tag="train/loss"] .plot');
                       const t = gd && gd.data && gd.data.find((t) => t.meta === 'live');
                       return t ? t.x.length : 0; }"""
    page.wait_for_function(f"() => ({count})() === 3", timeout=10_000)
    # Pushed, not polled: the page holds a server-sent event stream on the running run, and the new point comes
    # with one of its events (the real latency, about 0.1 s, is bench/bench_live.py's; polling took up to 2 s).
    view = '.view[data-view="scalars"]'
    page.wait_for_selector(f'{view}[data-live="open"]', state="attached", timeout=10_000)
    events = int(page.get_attribute(view, "data-live-events") or 0)
    live.log({"train/loss": 0.5}, step=3)
    live.flush()
    started = time.monotonic()
    page.wait_for_function(f"() => ({count})() === 4", timeout=6_000)
    assert time.monotonic() - started < 3
    assert int(page.get_attribute(view, "data-live-events") or 0) > events
    assert not problems


def test_distributions_bands_and_ridgelines(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "distributions")
    page.wait_for_function("() => document.querySelectorAll('.side-by-side .plot .main-svg').length >= 2")
    page.select_option('.view[data-view="distributions"] select >> nth=0', "weight/0.weight")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.side-by-side .card .note')]
               .every((n) => n.textContent.startsWith('weight/0.weight'))"""
    )
    titles = page.eval_on_selector_all(".side-by-side .card .title", "(ts) => ts.map((t) => t.textContent)")
    assert sorted(titles) == ["mlp-relu", "mlp-tanh"]
    lengths = _trace_lengths(page, ".side-by-side .plot")
    assert len(lengths) == 2 * 9 and set(lengths) == {STEPS}  # 4 bands (2 lines each) + median, per run
    # The median line lies inside the weights' range at every step.
    medians = page.evaluate(
        """() => [...document.querySelectorAll('.side-by-side .plot')].map(
               (gd) => gd.data.find((t) => t.name === 'median').y)"""
    )
    for median in medians:
        assert all(-1.0 < m < 1.0 for m in median)  # nn.Linear(4, 8) draws weights from U(-1/2, 1/2)
    page.screenshot(path=str(tmp_path / "distributions.png"), full_page=True)
    page.select_option('.view[data-view="distributions"] select >> nth=3', "ridges")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.side-by-side .plot')].every(
               (gd) => gd.data.length === 2 * 6 && gd.data[1].fill === 'tonexty')"""
    )
    page.screenshot(path=str(tmp_path / "ridgelines.png"), full_page=True)
    assert not problems


def test_distributions_picker_groups_tags_by_kind_and_the_window_picks_the_steps(
    browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    page, problems = browser_page
    _open(page, "distributions")
    view = '.view[data-view="distributions"]'
    picker = page.locator(f"{view} select").nth(0)
    page.wait_for_selector(f"{view} optgroup", state="attached")
    groups = picker.evaluate(
        """(s) => [...s.querySelectorAll('optgroup')].map((g) => [g.label,
               [...g.querySelectorAll('option')].map((o) => [o.value, o.textContent])])"""
    )
    blocks = [f"blocks.{i}.weight" for i in range(DEEP)]  # numbers in names in order: 0, 1, ..., 9, 10
    parameters = ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert groups == [
        ["weights", [[f"weight/{name}", name] for name in ["0.weight", "2.weight", *blocks]]],
        ["biases", [["bias/0.bias", "0.bias"], ["bias/2.bias", "2.bias"]]],
        ["gradients", [[f"gradient/{name}", name] for name in parameters]],
        ["activations", [[f"activation/{i}", str(i)] for i in range(3)]],
        ["other", [[HOSTILE, HOSTILE]]],
    ]
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0  # the HTML stays text

    page.locator(f"{view} select").nth(3).select_option("bands")
    picker.select_option("weight/0.weight")
    steps_plotted = """() => [...document.querySelectorAll('.side-by-side .plot')].map(
                           (gd) => gd.data.find((t) => t.name === 'median').x)"""

    def window(start: str, end: str, steps: list[int]) -> list[str]:
        """Type the window's bounds, wait until both runs' charts plot ``steps``; the charts' notes."""
        for nth, value in enumerate((start, end)):
            bound = page.locator(f"{view} .step-window input").nth(nth)
            bound.fill(value)
            bound.press("Tab")  # the change event, as a user leaving the field
        same = f"(want) => JSON.stringify(({steps_plotted})()) === JSON.stringify(want)"
        page.wait_for_function(same, arg=[steps] * 2)
        return page.eval_on_selector_all(".side-by-side .card .note", "(ns) => ns.map((n) => n.textContent)")

    assert page.evaluate(steps_plotted) == [list(range(STEPS))] * 2
    notes = window("2", "4", [2, 3, 4])
    assert notes == [f"weight/0.weight · 3 of 3 steps in 2–4, {STEPS} in all"] * 2
    page.screenshot(path=str(tmp_path / "distributions-window.png"), full_page=True)
    assert window("", "1", [0, 1]) == [f"weight/0.weight · 2 of 2 steps in 0–1, {STEPS} in all"] * 2
    page.click(f"{view} .step-window button")  # all steps
    page.wait_for_function(f"() => ({steps_plotted})().every((x) => x.length === {STEPS})")
    notes = page.eval_on_selector_all(".side-by-side .card .note", "(ns) => ns.map((n) => n.textContent)")
    assert notes == [f"weight/0.weight · {STEPS} of {STEPS} steps"] * 2

    picker.select_option(HOSTILE)
    page.wait_for_function(
        "(tag) => document.querySelector('.side-by-side .card .note').textContent.startsWith(tag)", arg=HOSTILE
    )
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert not problems


def test_graph_tree_and_parameters(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "graph")
    page.wait_for_selector(".tree [data-module]")
    modules = page.eval_on_selector_all(".tree [data-module]", "(ns) => ns.map((n) => n.dataset.module)")
    assert modules == ["", "0", "1", "2"]
    text = page.inner_text(".tree")
    assert "Linear" in text and "67 params" in text and "[16, 8]" in text  # 4*8+8 + 8*3+3 = 67 parameters
    assert "op graph: " in page.inner_text('.view[data-view="graph"] aside')
    # the icicle is drawn once plotly's whole build has loaded (the page starts with the basic build)
    page.wait_for_function("() => document.querySelector('.view[data-view=\"graph\"] .plot').data")
    values = page.evaluate("() => document.querySelector('.view[data-view=\"graph\"] .plot').data[0].values")
    assert values == [67, 40, 0, 27]
    # The op-level graph: torch.fx's input, three modules, output; one node each, edges along the chain, laid out
    # in one layer per node (a chain), data flowing downwards.
    page.wait_for_function("() => document.querySelector('[data-chart=\"ops\"] .plot').data")
    ops = page.evaluate(
        """() => document.querySelector('[data-chart="ops"] .plot').data.map(
               (t) => ({name: t.name, x: t.x, y: t.y, text: t.text}))"""
    )
    edges, *nodes = ops
    assert sum(len(t["x"]) for t in nodes) == 5
    assert len(edges["x"]) == 3 * 4  # 4 edges, each (a, b, gap)
    ys = sorted(y for t in nodes for y in t["y"])
    assert ys == [-4, -3, -2, -1, 0]
    assert {t["name"] for t in nodes} == {"placeholder", "call_module", "output"}
    page.screenshot(path=str(tmp_path / "graph.png"), full_page=True)
    assert not problems


def test_images_step_slider(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "images")
    page.wait_for_function("() => { const i = document.querySelector('.images img'); return i && i.naturalWidth; }")
    assert page.evaluate("() => document.querySelector('.images img').naturalWidth") == 16
    assert "step 5" in page.inner_text(".images .card .note")
    page.fill(".images input[type=range]", "0")
    page.wait_for_function("() => document.querySelector('.images .card .note').textContent.startsWith('step 0')")
    page.screenshot(path=str(tmp_path / "images.png"), full_page=True)
    assert not problems


def test_features_layer_pictures_and_checkpoint_slider(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "features")
    shown = "() => [...document.querySelectorAll('.features .card img')].every((i) => i.naturalWidth > 0)"
    page.wait_for_function(f"() => document.querySelectorAll('.features .card img').length === 2 && ({shown})()")
    cards = page.eval_on_selector_all(".features .card", "(cs) => cs.map((c) => c.dataset.what)")
    assert cards == ["filters", "maximize"]
    filters = '.features .card[data-what="filters"]'
    assert page.inner_text(f"{filters} .card-head .note").startswith("step 20 · noise ")
    assert page.evaluate("() => document.querySelector('.features .card[data-what=maximize] img').naturalWidth") == 35
    last = page.get_attribute(f"{filters} img", "src")
    page.fill("aside input.checkpoint", "0")  # the first checkpoint
    page.wait_for_function(
        f"() => document.querySelector('{filters} .card-head .note').textContent.startsWith('step 0 · noise')"
    )
    assert page.get_attribute(f"{filters} img", "src") != last
    page.wait_for_function(f"() => document.querySelector('{filters} img').naturalWidth > 0")
    # the maximisation was logged at step 20 only: before it, its first picture stays
    assert page.inner_text('.features .card[data-what="maximize"] .card-head .note') == "step 20"
    page.screenshot(path=str(tmp_path / "features.png"), full_page=True)
    assert not problems


def test_evaluation_confusion_matrix_roc_pr_and_scores(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "evaluation")
    matrix = '[data-chart="matrix"] .plot'
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{matrix}'); return gd && gd.data; }}")
    z = page.evaluate(f"() => document.querySelector('{matrix}').data[0].z")
    counts = np.zeros((3, 3), int)
    np.add.at(counts, (TRUTH, PREDICTED), 1)
    np.testing.assert_array_equal(z, counts)
    # The class named like an HTML tag is a tick label shown as typed, and made no element.
    ticks = page.eval_on_selector_all(f"{matrix} .xtick text", "(ts) => ts.map((t) => t.textContent)")
    assert HOSTILE in ticks and page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    page.check('.view[data-view="evaluation"] aside input[type=checkbox]')
    page.wait_for_function(f"() => document.querySelector('{matrix}').data[0].zmax === 1")
    rows = page.evaluate(f"() => document.querySelector('{matrix}').data[0].z.map((r) => r.reduce((a, b) => a + b))")
    assert rows == pytest.approx([1.0, 1.0, 1.0])
    for chart in ("roc", "pr"):
        lengths = _trace_lengths(page, f'[data-chart="{chart}"] .plot')
        assert lengths[0] == 21  # one point per stored threshold
    roc = page.evaluate("() => document.querySelector('[data-chart=\"roc\"] .plot').data[0]")
    assert roc["x"][0] == 1 and roc["y"][0] == 1 and roc["x"][-1] == 0  # threshold 0: all positive; 1: nearly none
    assert "AUC" in roc["name"]
    # Score distributions: every sample of each class in the bin of its score.
    negatives, positives = page.evaluate(
        "() => document.querySelector('[data-chart=\"scores\"] .plot').data.map((t) => t.customdata)"
    )
    for bars, scores in ((negatives, DOG_SCORES[TRUTH != 1]), (positives, DOG_SCORES[TRUTH == 1])):
        expected = np.bincount(np.floor(scores * 20 + 1e-9).astype(int), minlength=21)
        np.testing.assert_array_equal(bars, expected)
    fractions = page.evaluate("() => document.querySelector('[data-chart=\"scores\"] .plot').data.map((t) => t.y)")
    assert [sum(f) for f in fractions] == pytest.approx([1, 1])  # each class drawn as shares of its own samples
    page.screenshot(path=str(tmp_path / "evaluation.png"), full_page=True)
    assert not problems


def test_evaluation_sanity_curves_comparison_table_and_faithfulness(
    browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    page, problems = browser_page
    _open(page, "evaluation")
    sanity = '[data-chart="sanity"] .plot'
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{sanity}'); return gd && gd.data; }}")
    check = TRUSTED["check"]
    # One mean line per method (with its band's two edges), one point per step, the check's mean over the inputs.
    lines = page.evaluate(f"() => document.querySelector('{sanity}').data.filter((t) => t.meta === 'mean')")
    assert [t["name"] for t in lines] == check.methods
    for line, method in zip(lines, check.methods):
        expected = check.scores[method]["spearman"].numpy().astype(np.float64).mean(axis=1)
        np.testing.assert_allclose(line["y"], expected, rtol=0, atol=1e-12)
        assert len(line["x"]) == len(check.steps) and line["y"][0] == 1.0
    bands = page.evaluate(f"() => document.querySelector('{sanity}').data.filter((t) => t.meta === 'band').length")
    assert bands == 2 * len(check.methods)
    ticks = page.evaluate(f"() => document.querySelector('{sanity}').layout.xaxis.ticktext")
    assert ticks == check.steps
    # Another similarity metric redraws the curves.
    page.select_option('select[data-control="similarity"]', "ssim")
    expected = check.scores["saliency"]["ssim"].numpy().astype(np.float64).mean(axis=1).tolist()
    page.wait_for_function(
        f"""(y) => {{ const t = document.querySelector('{sanity}').data.find((t) => t.meta === 'mean');
                      return t.y.every((v, i) => Math.abs(v - y[i]) < 1e-12); }}""",
        arg=expected,
    )
    # The comparison table: best first, the failed method last with its reason as text; a click on a header sorts.
    comparison = TRUSTED["comparison"]
    order = '() => [...document.querySelectorAll("table.comparison tbody tr")].map((r) => r.dataset.method)'
    page.wait_for_function(f"() => ({order})().length === {len(comparison.rows)}")
    assert page.evaluate(order) == [row.method for row in comparison.rows]
    assert page.evaluate(order)[-1] == "_unfit"
    assert f"failed: cannot explain {HOSTILE}" in page.inner_text("table.comparison tr.failed")
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    shown = page.eval_on_selector_all(
        "table.comparison tbody tr:not(.failed) td[data-value]", "(cs) => cs.map((c) => Number(c.dataset.value))"
    )
    assert shown == [v for row in comparison.rows[:-1] for v in (row.deletion, row.sanity)]
    page.click('table.comparison th[data-column="sanity"]')
    by_sanity = sorted((row for row in comparison.rows if row.error is None), key=lambda row: row.sanity)
    assert page.evaluate(order) == [row.method for row in by_sanity] + ["_unfit"]
    page.click('table.comparison th[data-column="sanity"]')  # again: the other way
    assert page.evaluate(order) == [row.method for row in reversed(by_sanity)] + ["_unfit"]
    # Faithfulness: each method's mean deletion curve over the inputs, FAITH_STEPS + 1 points, AUC in the name.
    faith = '[data-chart="faithfulness"] .plot'
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{faith}'); return gd && gd.data; }}")
    curves = page.evaluate(f"() => document.querySelector('{faith}').data.filter((t) => t.meta === 'mean')")
    assert len(curves) == 2
    for curve, result in zip(curves, TRUSTED["deletion"]):
        assert curve["name"].startswith(f"{result.method} · deletion (AUC {float(result.auc.mean()):.3f})")
        expected = result.curves.numpy().astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(curve["y"], expected, rtol=0, atol=1e-12)
        assert len(curve["x"]) == FAITH_STEPS + 1
    page.screenshot(path=str(tmp_path / "evaluation-trust.png"), full_page=True)
    assert not problems


def test_explanation_gallery_side_by_side_with_misclassified_filter(
    browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    page, problems = browser_page
    _open(page, "explanations")
    loaded = "() => [...document.querySelectorAll('.gallery img')].filter((i) => i.complete && i.naturalWidth).length"
    page.wait_for_function(f"() => ({loaded})() === {EXPLAINED * 3}")  # the input and two methods per row
    assert page.evaluate("() => document.querySelector('.gallery img').naturalWidth") == 12
    head = page.eval_on_selector_all(".gallery-row.head span", "(ss) => ss.map((s) => s.textContent)")
    assert head == ["input", "saliency", "gradcam"]
    assert "Do not focus only on cases that are classified correctly" in page.inner_text(".advice")
    assert page.eval_on_selector_all(".gallery-row.wrong", "(rs) => rs.map((r) => r.dataset.index)") == ["0"]
    page.check('.view[data-view="explanations"] aside input[type=checkbox]')
    page.wait_for_function("() => document.querySelectorAll('.gallery-row:not(.head)').length === 1")
    assert page.eval_on_selector_all(".gallery-row:not(.head)", "(rs) => rs.map((r) => r.dataset.index)") == ["0"]
    caption = page.inner_text(".gallery-row.wrong figcaption")
    assert "label:" in caption and "predicted:" in caption and "✗" in caption
    page.screenshot(path=str(tmp_path / "explanations.png"), full_page=True)
    page.uncheck('.view[data-view="explanations"] aside input[type=checkbox]')
    assert not problems


def test_text_is_shown_as_text(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "text")
    # Rendered as Markdown: plain text is a paragraph, shown as text (no <b> made of it).
    plain = '.texts .card:has-text("mlp-tanh · notes") .markdown'
    page.wait_for_selector(plain)
    assert page.inner_text(plain) == "a tanh MLP: <b>not bold</b>"
    assert page.evaluate("() => document.querySelectorAll('.texts b, .texts i, .texts img').length") == 0
    report = page.locator('.texts .card:has-text("mlp-tanh · report") .markdown')
    assert report.locator("h1").inner_text() == "Results <i>x</i>"
    assert report.locator("strong").inner_text() == "best" and report.locator("em").all_inner_texts() == ["warmup"]
    assert report.locator("p code").inner_text() == "lr=0.1"
    links = report.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://arxiv.org/abs/1"
    assert links.get_attribute("rel") == "noopener noreferrer" and links.inner_text() == "the paper"
    assert "[this](javascript:alert(1))" in report.inner_text()  # not a link: shown as written
    assert "snake_case_names" in report.inner_text()
    assert report.locator("ul li").all_inner_texts() == ["first", "second with code"]
    assert report.locator("ol li").all_inner_texts() == ["one", "two"]
    assert report.locator("pre").inner_text() == "for x in data: <b>print(x)</b>"  # .texts pre: code
    page.screenshot(path=str(tmp_path / "text.png"), full_page=True)
    assert not problems


def test_chart_exports(browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    _open(page, "scalars")
    card = '.card[data-tag="train/acc"]'
    page.wait_for_selector(f"{card} .plot .main-svg")
    with page.expect_download() as download:
        page.click(f"{card} button.csv")
    download.value.save_as(tmp_path / "acc.csv")
    lines = (tmp_path / "acc.csv").read_text().strip().splitlines()
    assert lines[0] == '"run","tag","step","epoch","wall_time","value"'
    assert len(lines) == 1 + 2 * STEPS
    png = page.evaluate(
        f"""() => Plotly.toImage(document.querySelector('{card} .plot'), {{format: 'png', width: 400, height: 300}})"""
    )
    assert png.startswith("data:image/png;base64,") and len(png) > 1000
    assert not problems


def test_token_is_sent_with_every_request(store: tuple[Path, ds.Run], browser_page: tuple[Any, list[str]]) -> None:
    """A board that requires a token: the page, its scripts and every API call carry the one in the page's URL."""
    root, _ = store
    page, _ = browser_page
    with serving(create_app(root, token="s3cret")) as url:
        second = page.context.browser.new_page()
        refused: list[str] = []
        second.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
        second.goto(f"{url}/?token=s3cret&view=images")
        second.wait_for_function(
            "() => { const i = document.querySelector('.images img'); return i && i.naturalWidth; }", timeout=10_000
        )
        assert not refused
        second.close()


def test_requests_go_out_while_plotly_loads_and_charts_wait_for_it(
    server: str, browser_page: tuple[Any, list[str]]
) -> None:
    """plotly.js held back by the network: the page asks for the runs and views (one answer) and each tag's scalars
    at once, once each (no second poll while nothing can be drawn), and draws them when plotly arrives."""
    page, _ = browser_page
    fresh = page.context.browser.new_page()
    problems: list[str] = []
    fresh.on("pageerror", lambda e: problems.append(str(e)))
    requested: list[str] = []
    fresh.on("request", lambda r: requested.append(r.url.removeprefix(server)))
    held: list[Any] = []
    fresh.route("**/static/plotly-basic.min.js*", lambda route: held.append(route))
    try:
        fresh.goto(f"{server}?view=scalars", wait_until="commit")
        tags = ("features/conv/filters/noise", "grad_norm/0", "grad_norm/2", "train/acc", "train/loss", "zoom/sine")
        deadline = time.monotonic() + 10
        while sum(u.startswith("api/scalars/batch") for u in requested) < len(tags):
            assert time.monotonic() < deadline, f"the page asked for {requested} only"
            fresh.wait_for_timeout(20)
        fresh.wait_for_timeout(2500)  # longer than a poll period (2 s): no poll may repeat meanwhile
        assert len(held) == 1 and fresh.evaluate("() => window.Plotly === undefined")
        batches = sorted(u for u in requested if u.startswith("api/scalars/batch"))
        assert [parse_qs(urlsplit(u).query)["tag"] for u in batches] == [[t] for t in tags]
        assert sorted(u.split("?")[0] for u in requested if u.startswith("api/")) == [
            "api/events",  # the live stream on the running run (its points come with the batches)
            "api/overview",
            *["api/scalars/batch"] * len(tags),
        ]
        assert fresh.evaluate("() => document.querySelectorAll('.card[data-tag]').length") == 0  # nothing drawn
        held[0].continue_()
        fresh.wait_for_function(
            """() => { const gd = document.querySelector('.card[data-tag="train/acc"] .plot');
                       return gd && gd.data && gd.data.length === 4; }""",
            timeout=10_000,
        )
        assert sum(u.startswith("static/plotly-basic.min.js") for u in requested) == 1
        assert not any(u.startswith("static/plotly.min.js") for u in requested)  # scatter lines: the basic build's
        assert sum(u.startswith("static/app.js") for u in requested) == 1
        assert not problems
    finally:
        fresh.close()


# Each chart's traces as asked of plotly and as plotly drew them: a build that lacks a trace type draws it as an
# invisible scatter, without a word.
TRACES_DRAWN = """(view) => [...document.querySelectorAll(`.view[data-view="${view}"] .plot`)].flatMap(
    (gd) => (gd.data || []).map((t, i) => [t.type || "scatter", gd._fullData?.[i]?.type]))"""


def test_each_chart_is_drawn_by_a_plotly_build_that_has_its_traces(
    server: str, browser_page: tuple[Any, list[str]]
) -> None:
    """The page starts with plotly's basic build: Scalars never loads the whole one; Evaluation's heatmap and the
    Graph's icicle are drawn by the whole build, loaded once; the Scalars charts drawn before go on working."""
    page, _ = browser_page
    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    fresh.on("pageerror", lambda e: problems.append(str(e)))
    requested: list[str] = []
    fresh.on("request", lambda r: requested.append(r.url.removeprefix(server).split("?")[0]))
    wanted = {"scalars": {"scatter"}, "evaluation": {"heatmap", "scatter", "bar"}, "graph": {"icicle", "scatter"}}
    try:
        fresh.goto(f"{server}?view=scalars")
        for view, types in wanted.items():
            if view != "scalars":
                _open(fresh, view)
            fresh.wait_for_function(
                f"(types) => {{ const drawn = ({TRACES_DRAWN})({view!r}); return types.every("
                "(t) => drawn.some(([asked, shown]) => asked === t && shown === t)); }",
                arg=sorted(types),
                timeout=20_000,
            )
            drawn = fresh.evaluate(TRACES_DRAWN, view)
            assert all(asked == shown for asked, shown in drawn), (view, drawn)
            if view == "scalars":
                assert "static/plotly-basic.min.js" in requested and "static/plotly.min.js" not in requested
        assert requested.count("static/plotly.min.js") == 1 and requested.count("static/plotly-basic.min.js") == 1
        # window.Plotly is still the basic build, and the Scalars charts it drew answer it after the whole one came
        _open(fresh, "scalars")
        plot = '.view[data-view="scalars"] .card[data-tag="train/loss"] .plot'
        relaid = f"""async () => {{ const gd = document.querySelector('{plot}');
                     await Plotly.relayout(gd, {{'yaxis.title.text': 'probe'}});
                     return gd._fullLayout.yaxis.title.text; }}"""
        assert fresh.evaluate(relaid) == "probe"
        assert not problems
    finally:
        fresh.close()


def test_a_started_server_has_warmed_what_the_scalars_page_asks_first(
    browser_page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    """As `deepscope board` starts, its Scalars answers are read, downsampled and encoded in the background at the
    page's points per run: a first visit's requests find every part in the cache (none is computed again). 40 runs
    share a chart: 1,024 points each, below the cap, where the page's and the server's shares must agree."""
    for k in range(40):
        with ds.Run(tmp_path / f"run{k:02d}") as run:
            run.log_series("loss", np.arange(3000), np.linspace(1, 0, 3000) + k)
            run.log({"acc": k / 40}, step=0)
    app = create_app(tmp_path)
    warm(app).join(timeout=60)
    cache = app.state.views["scalars"]
    assert len(cache) == 80  # each run's two tags
    page, _ = browser_page
    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    fresh.on("pageerror", lambda e: problems.append(str(e)))
    try:
        with serving(app) as url:
            fresh.goto(f"{url}/?view=scalars")
            fresh.wait_for_function(
                """() => ['loss', 'acc'].every((tag) => {
                       const gd = document.querySelector(`.view[data-view="scalars"] .card[data-tag="${tag}"] .plot`);
                       const traces = gd && (gd.lineTraces || gd.data);
                       return traces && new Set(traces.map((t) => t.meta)).size === 40; })""",
                timeout=20_000,
            )
            lengths = fresh.evaluate(
                """() => document.querySelector('.card[data-tag="loss"] .plot').lineTraces.map((t) => t.x.length)"""
            )
            assert 512 < max(lengths) <= 1024  # min/max downsampled to the page's share (3,000 points each)
            assert len(cache) == 80
        assert not problems
    finally:
        fresh.close()


def test_zooming_in_asks_the_server_for_the_full_detail(browser_page: tuple[Any, list[str]]) -> None:
    page, problems = browser_page
    _open(page, "scalars")
    plot = '.card[data-tag="zoom/sine"] .plot'
    steps = f"() => {{ const gd = document.querySelector('{plot}'); return gd && gd.data ? gd.data[0].x : []; }}"
    page.wait_for_function(f"() => ({steps})().length > 0")
    overview = page.evaluate(steps)
    assert len(overview) <= 2000 and overview[0] == 0 and overview[-1] == LONG - 1  # downsampled, ends kept
    assert "of 5000 points" in page.inner_text('.card[data-tag="zoom/sine"] .note')
    page.evaluate(f"() => Plotly.relayout(document.querySelector('{plot}'), {{'xaxis.range': [1000, 1300]}})")
    page.wait_for_function(f"() => ({steps})().length === 301")  # every step of the range: refined, not resampled
    assert page.evaluate(steps) == list(range(1000, 1301))
    page.evaluate(f"() => Plotly.relayout(document.querySelector('{plot}'), {{'xaxis.autorange': true}})")
    page.wait_for_function(f"() => ({steps})().length === {len(overview)}")
    # The other x axes: wall-clock dates, seconds since the run's first point, epochs (none logged here: gaps).
    for mode, first in (("wall", str), ("relative", int), ("epoch", type(None))):
        page.select_option('.view[data-view="scalars"] aside select', mode)
        page.wait_for_function(
            f"() => {{ const gd = document.querySelector('{plot}'); return gd.layout.xaxis.type === "
            f"'{'date' if mode == 'wall' else 'linear'}' && gd.data[0].x.length === {len(overview)}; }}"
        )
        start = page.evaluate(f"() => document.querySelector('{plot}').data[0].x[0]")
        assert isinstance(start, first)
        assert mode == "wall" or start in (None, 0)  # relative time starts at 0
    page.select_option('.view[data-view="scalars"] aside select', "step")
    assert not problems
