"""The Explanations view over training: ``/api/probe`` (one input of an explanation tag through its steps, beside the
loss) on probes logged by ``run.watch(probes=...)`` and on sets logged by hand, and in a real browser the step
slider moving one probe's heatmap through the steps, misclassified steps marked."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CHROMIUM, CHROMIUM_ARGS, serving
from PIL import Image as PILImage
from torch import nn

import deepscope as ds
from deepscope.dashboard.sources import NotFound
from deepscope.dashboard.views.explanations.data import probe
from deepscope.errors import BadInputError
from deepscope.store.reader import Reader

fastapi = pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
from fastapi.testclient import TestClient  # noqa: E402

from deepscope.dashboard import create_app  # noqa: E402

CLASSES = ["cat", "dog", "<b>bird</b>"]
STEPS = (0, 10, 20)
WRONG_AT = 10  # probe 0 is misclassified at this step only


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()


def _by_hand(root: Path) -> None:
    """Three probes explained by Grad-CAM and saliency at steps 0, 10, 20, the weights changed between them; a
    loss logged every step; probe 0 predicted wrong at step 10 only."""
    model = _model()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2])
    with ds.Run(root / "by-hand") as run:
        for step in range(STEPS[-1] + 1):
            run.log({"train/loss": 2.0 / (1 + step), "val/loss": 3.0 / (1 + step)}, step=step)
        for step in STEPS:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(100 + step)) * 0.5)
            found = [ds.explain(model, x, m) for m in ("gradcam", "saliency")]
            predictions = labels.clone()
            if step == WRONG_AT:
                predictions[0] = 1
            run.log_explanations(found, labels, predictions, classes=CLASSES, step=step, tag="probes")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _by_hand(root)
    return root


def _png(client: TestClient, url: str) -> np.ndarray:
    answer = client.get("/" + url)
    assert answer.status_code == 200
    return np.asarray(PILImage.open(io.BytesIO(answer.content)).convert("RGB"))


def test_probe_answers_one_input_through_the_steps(root: Path) -> None:
    client = TestClient(create_app(root), base_url="http://127.0.0.1")
    answer = client.get("/api/probe", params={"run": "by-hand", "tag": "probes", "index": 0}).json()
    with Reader(root / "by-hand") as reader:
        records = reader.records("probes")
    assert answer["steps"] == list(STEPS) and answer["methods"] == ["gradcam", "saliency"]
    assert answer["label"] == "cat" and answer["loss"]["tag"] == "train/loss"
    assert answer["losses"] == ["train/loss", "val/loss"]
    assert answer["loss"]["steps"] == list(range(STEPS[-1] + 1))
    for frame, record in zip(answer["frames"], records):
        assert frame["step"] == record.step
        assert frame["prediction"] == record.predictions[0]
        assert frame["correct"] is (frame["step"] != WRONG_AT)
        assert frame["loss"] == pytest.approx(2.0 / (1 + frame["step"]))
        for m, picture in enumerate(frame["maps"]):
            assert picture["method"] == record.methods[m] and picture["target"] == record.targets[m][0]
            assert picture["score"] == pytest.approx(record.scores[m, 0])
            np.testing.assert_array_equal(_png(client, picture["heatmap"]), record.heatmaps[m, 0])
            np.testing.assert_array_equal(_png(client, picture["overlay"]), record.overlays[m, 0])
    np.testing.assert_array_equal(_png(client, answer["input"]), records[-1].inputs[0])
    # Another probe, another loss tag.
    other = probe(root, "by-hand", "probes", 2, loss="val/loss")
    assert other["label"] == "<b>bird</b>" and all(f["correct"] for f in other["frames"])
    assert [f["loss"] for f in other["frames"]] == pytest.approx([3.0 / (1 + s) for s in STEPS])


def test_probe_refuses_what_is_not_there(root: Path) -> None:
    client = TestClient(create_app(root), base_url="http://127.0.0.1")
    wrong = client.get("/api/probe", params={"run": "by-hand", "tag": "probes", "index": 3})
    assert wrong.status_code == 422 and "choose 0 to 2" in wrong.text
    assert client.get("/api/probe", params={"run": "by-hand", "tag": "train/loss"}).status_code == 404
    assert client.get("/api/probe", params={"run": "nope", "tag": "probes"}).status_code == 404
    with pytest.raises(NotFound, match="no scalar tag 'probes'"):
        probe(root, "by-hand", "probes", 0, loss="probes")
    with pytest.raises(BadInputError):
        probe(root, "by-hand", "probes", -1)


def test_probes_logged_during_training_are_shown_step_by_step(tmp_path: Path) -> None:
    """run.watch(probes=...) end to end: the answer's frames are the stored sets, the loss read at each step."""
    torch.manual_seed(0)
    model = _model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.rand(16, 3, 12, 12), torch.randint(0, 3, (16,))
    with ds.Run(tmp_path / "trained") as run:
        run.watch(model, every=2, kinds=(), probes=x[:4], labels=y[:4], methods=["gradcam"])
        for step in range(5):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"train/loss": loss}, step=step)
    answer = probe(tmp_path, "trained", "probes", 1)
    with Reader(tmp_path / "trained") as reader:
        records = reader.records("probes")
        losses = reader.scalars("train/loss")
    assert answer["steps"] == [0, 2, 4] == [r.step for r in records]
    assert [f["prediction"] for f in answer["frames"]] == [r.predictions[1] for r in records]
    assert [f["correct"] for f in answer["frames"]] == [r.predictions[1] == r.labels[1] for r in records]
    assert [f["loss"] for f in answer["frames"]] == [float(losses.values[s]) for s in (0, 2, 4)]


# The page, in headless Chromium.


@pytest.fixture(scope="module")
def page(root: Path) -> Iterator[tuple[Any, list[str]]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
    pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
    problems: list[str] = []
    with serving(create_app(root)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(f"{url}/?view=explanations")
        page.wait_for_selector('#tabs button[data-view="explanations"]', timeout=15_000)
        page.click('#tabs button[data-view="explanations"]')
        yield page, problems
        browser.close()


def _now(page: Any) -> dict[str, Any]:
    """What the probe panel shows now: its step, each method's picture, whether it is marked misclassified."""
    return page.evaluate(
        """() => {
            const now = document.querySelector('.probe-now');
            return {
                step: Number(now.dataset.step),
                maps: [...now.querySelectorAll('figure[data-method] img')].map((i) => i.getAttribute('src')),
                wrong: now.classList.contains('wrong'),
                caption: now.querySelector('.prediction').textContent,
            };
        }"""
    )


def _slide(page: Any, position: int) -> None:
    page.evaluate(
        """(k) => { const s = document.querySelector('.probe-slider'); s.value = String(k);
                    s.dispatchEvent(new Event('input', { bubbles: true })); }""",
        position,
    )


def test_the_slider_moves_one_probes_heatmap_through_training(
    root: Path, page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    browser, problems = page
    browser.wait_for_selector(".probe-now figure[data-method]", timeout=15_000)
    answer = probe(root, "by-hand", "probes", 0)
    shown = {}
    for position, step in enumerate(STEPS):
        _slide(browser, position)
        browser.wait_for_function(f"() => document.querySelector('.probe-now').dataset.step === '{step}'")
        shown[step] = _now(browser)
        frame = answer["frames"][position]
        # the overlays ("heatmap over input", the default), each the stored picture of its step
        assert [src.split("&token")[0] for src in shown[step]["maps"]] == [m["overlay"] for m in frame["maps"]]
        assert shown[step]["wrong"] is (step == WRONG_AT)
        assert ("misclassified at this step" in shown[step]["caption"]) is (step == WRONG_AT)
        # the gallery below follows the slider, and the loss chart marks the step
        browser.wait_for_function(f"() => document.querySelector('.gallery-step').value === '{step}'")
        marker = browser.evaluate(
            "() => { const gd = document.querySelector('.probe-loss-chart .plot'); return gd.data[1].x[0]; }"
        )
        assert marker == step
    assert len({tuple(s["maps"]) for s in shown.values()}) == len(STEPS)  # the heatmap changed at every step
    # the filmstrip: one picture per step and method, the misclassified step's marked
    strip = browser.eval_on_selector_all(".probe-strip", "(ss) => ss.map((s) => s.querySelectorAll('img').length)")
    assert strip == [len(STEPS), len(STEPS)]
    wrong = browser.eval_on_selector_all(".probe-strip img.wrong", "(is) => is.map((i) => i.alt)")
    assert wrong == [f"gradcam at step {WRONG_AT}", f"saliency at step {WRONG_AT}"]
    browser.screenshot(path=str(tmp_path / "probes.png"), full_page=True)
    assert not problems
