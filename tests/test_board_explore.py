"""The explorer: a data item explained on demand in a worker process (the server never imports torch), started by a
JSON POST that another origin cannot forge, one job per client, a timeout, results cached in the run's folder."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import deepscope as ds
from deepscope import render
from deepscope.demo.models import FashionCNN
from deepscope.store.reader import Reader

pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from deepscope.dashboard import create_app
from deepscope.dashboard.views.explore import configure
from deepscope.dashboard.views.explore import models as typed
from deepscope.dashboard.views.explore.jobs import Explorer

LOCAL = "http://127.0.0.1"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, dict[int, dict]]:
    """A run with the demo CNN's weights kept at steps 5 and 10, and 6 images saved for the worker."""
    root = tmp_path_factory.mktemp("explore")
    torch.manual_seed(0)
    model = FashionCNN()
    states = {}
    with ds.Run(root / "cnn") as run:
        for step in (5, 10):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
            run.checkpoint(model, step=step)
            states[step] = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.save((x, torch.arange(6) % 10), root / "data.pt")
    return root, x, states


def _png(client: TestClient, url: str) -> np.ndarray:
    answer = client.get("/" + url)
    assert answer.status_code == 200, answer.text
    return np.asarray(PILImage.open(io.BytesIO(answer.content)).convert("RGB"))


def _typed(model: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer, checked against its route's model in the OpenAPI schema (tests/test_board_openapi.py)."""
    TypeAdapter(model).validate_python(answer, strict=True)
    return answer


def _done(client: TestClient, job: dict[str, Any], seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while _typed(typed.Job, job)["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/api/explore/jobs/{job['id']}").json()
    return job


@pytest.fixture(scope="module")
def app(store: tuple[Path, torch.Tensor, dict[int, dict]]) -> Iterator[Any]:
    """The board of the run with an explorer of the demo CNN, for the module's API and page tests: its worker
    process (importing torch, seconds) is started once."""
    root = store[0]
    app = create_app(root)
    explorer = configure(app, {"model": "deepscope.demo.models:FashionCNN", "data": {"file": str(root / "data.pt")}})
    yield app
    explorer.close()


@pytest.fixture(scope="module")
def client(app: Any) -> Any:
    return TestClient(app, base_url=LOCAL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the module's page tests, launched once (each page gets a context of its own)."""
    from conftest import CHROMIUM, chromium

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
    pytest.importorskip("uvicorn", reason="uvicorn is missing (pip install -e '.[board]')")
    with chromium() as browser:
        yield browser


@contextlib.contextmanager
def _explore_tab(app: Any, browser: Any, height: int) -> Iterator[tuple[Any, list[str]]]:
    """``app`` served, its Explore tab open in a fresh page of ``browser`` with the methods listed: the page, and
    the list its console errors and uncaught exceptions land in."""
    from conftest import serving, watched_page

    with (
        serving(app) as url,
        watched_page(browser, viewport={"width": 1200, "height": height}) as (page, problems),
    ):
        page.goto(f"{url}/")
        page.click('#tabs button[data-view="explore"]', timeout=20_000)
        page.wait_for_function("() => document.querySelectorAll('.explore-method option').length > 3", timeout=60_000)
        yield page, problems


def test_choosing_an_item_and_gradcam_gives_explain_on_the_checkpoint(store, client) -> None:
    root, x, states = store
    assert client.get("/api/views").json()["explore"] is True
    offer = _typed(typed.Offer, client.get("/api/explore").json())
    assert offer["items"] == 6 and "gradcam" in offer["methods"] and offer["labels"] == [0, 1, 2, 3, 4, 5]
    job = client.post("/api/explore/jobs", json={"run": "cnn", "item": 3, "method": "gradcam"}).json()
    job = _done(client, job)
    assert job["status"] == "done", job
    model = FashionCNN()
    model.load_state_dict(states[10])  # the run's last checkpoint by default
    e = ds.explain(model.eval(), x[3:4], "gradcam")
    expected = np.round(np.clip(render.colorize(e.heatmap[0]), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_png(client, job["urls"]["heatmap"]), expected)
    result = job["result"]
    assert result["step"] == 10 and result["label"] == 3 and result["layer"] == e.layer
    assert result["score"] == pytest.approx(float(e.scores[0]), rel=1e-5)
    with torch.no_grad():
        top = model(x[3:4]).softmax(1)[0].topk(5)
    assert [t["class"] for t in result["top"]] == top.indices.tolist()
    # cached in the run's folder: asked again, answered at once without the worker
    assert (root / "cnn" / "explore" / job["key"] / "result.json").is_file()
    again = client.post("/api/explore/jobs", json={"run": "cnn", "item": 3, "method": "gradcam"}).json()
    assert again["status"] == "done" and again["cached"] and again["key"] == job["key"]
    # an earlier checkpoint, another method and target: another result
    other = _done(
        client, client.post("/api/explore/jobs", json={"run": "cnn", "item": 3, "method": "saliency", "step": 5,
                                                       "target": 2}).json()
    )  # fmt: skip
    model.load_state_dict(states[5])
    e5 = ds.explain(model.eval(), x[3:4], "saliency", target=2)
    expected5 = np.round(np.clip(render.colorize(e5.heatmap[0]), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_png(client, other["urls"]["heatmap"]), expected5)
    assert other["key"] != job["key"]


def test_a_forged_cross_origin_request_starts_nothing(store, client) -> None:
    root = store[0]
    before = sorted((root / "cnn" / "explore").iterdir()) if (root / "cnn" / "explore").exists() else []
    body = '{"run": "cnn", "item": 1, "method": "saliency"}'
    form = client.post("/api/explore/jobs", content=body, headers={"Content-Type": "text/plain"})
    assert form.status_code == 403 and "JSON body" in form.text
    foreign = client.post("/api/explore/jobs", content=body, headers={**JSON, "Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.text
    assert client.get("/api/explore/jobs/999").status_code == 422
    time.sleep(0.5)
    after = sorted((root / "cnn" / "explore").iterdir()) if (root / "cnn" / "explore").exists() else []
    assert after == before


def test_bad_requests_are_refused(client) -> None:
    for body, message in (
        ({"run": "cnn", "item": 6, "method": "gradcam"}, "choose 0 to 5"),
        ({"run": "cnn", "item": 0, "method": "gradkam"}, "unknown method"),
        ({"run": "cnn", "item": 0, "method": "gradcam", "step": 7}, "no checkpoint at step 7"),
        ({"run": "cnn", "item": 0, "method": "gradcam", "target": -1}, "target"),
    ):
        answer = client.post("/api/explore/jobs", json=body)
        assert answer.status_code == 422 and message in answer.text, (body, answer.text)
    assert client.post("/api/explore/jobs", json={"run": "../x", "item": 0, "method": "gradcam"}).status_code == 404
    for key, name in (("../../etc", "input.png"), ("0" * 32, "run.db"), ("0" * 32, "input.png")):
        params = {"run": "cnn", "key": key, "name": name}
        assert client.get("/api/explore/file", params=params).status_code == 404
    # a layer the model does not have: the job fails and says so, the worker goes on
    job = _done(client, client.post("/api/explore/jobs", json={"run": "cnn", "item": 0, "method": "gradcam",
                                                               "layer": "features.conv9"}).json())  # fmt: skip
    assert job["status"] == "failed" and "features.conv9" in job["error"]


def test_without_a_model_there_is_no_explore_tab(store) -> None:
    client = TestClient(create_app(store[0]), base_url=LOCAL)
    assert client.get("/api/views").json()["explore"] is False
    assert client.get("/api/explore").status_code == 404


SLOW = """
import time
from torch import nn

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        time.sleep(SECONDS)
        return self.fc(self.conv(x).mean((2, 3)))

def make_model():
    return Slow()
"""


def test_one_job_per_client_and_a_timeout(store, tmp_path, monkeypatch) -> None:
    root = store[0]
    (tmp_path / "slowmodels.py").write_text(SLOW.replace("SECONDS", "1.5"))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(ds.__file__).parents[1]}")
    explorer = Explorer({"model": "slowmodels:make_model", "data": {"file": str(root / "data.pt")}}, timeout=2.5)
    try:
        explorer.info()  # the worker started
        run_dir = root / "cnn"
        first = explorer.submit("a", "cnn", run_dir, None, {"item": 0, "method": "saliency", "target": None,
                                                            "layer": None})  # fmt: skip
        same = explorer.submit("a", "cnn", run_dir, None, {"item": 1, "method": "saliency", "target": None,
                                                           "layer": None})  # fmt: skip
        other = explorer.submit("b", "cnn", run_dir, None, {"item": 2, "method": "saliency", "target": None,
                                                            "layer": None})  # fmt: skip
        assert same is first and other is not first  # one job per client; another client queues behind
        assert explorer.status(other.id)["position"] in (0, 1)  # behind the first, or next once it runs
        deadline = time.monotonic() + 10
        while explorer.status(first.id)["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting = explorer.status(other.id)  # the queue as the page shows it: next in line, another job running
        assert waiting["status"] == "queued" and waiting["position"] == 0 and waiting["queued"] == 1
        assert waiting["others_running"] is True and explorer.status(first.id)["others_running"] is False
        deadline = time.monotonic() + 60
        while explorer.status(other.id)["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # saliency: a forward and a backward, 1.5 s each way... the forward alone sleeps 1.5 s, the score pass 1.5 s
        # more: past the 2.5 s timeout, each job fails and the worker is stopped, then started again for the next.
        assert explorer.status(first.id)["status"] == "failed" and "longer than 2.5 s" in first.error
        assert explorer.status(other.id)["status"] == "failed"
    finally:
        explorer.close()


def test_the_server_never_imports_torch(store) -> None:
    """Starting a job from a board process that has not imported torch leaves it without torch."""
    root = store[0]
    code = f"""
import sys, time
from fastapi.testclient import TestClient
from deepscope.dashboard import create_app
from deepscope.dashboard.views.explore import configure
app = create_app({str(root)!r})
data = {str(root / "data.pt")!r}
explorer = configure(app, {{"model": "deepscope.demo.models:FashionCNN", "data": {{"file": data}}}})
client = TestClient(app, base_url="http://127.0.0.1")
job = client.post("/api/explore/jobs", json={{"run": "cnn", "item": 5, "method": "saliency"}}).json()
while job["status"] in ("queued", "running"):
    time.sleep(0.1)
    job = client.get("/api/explore/jobs/" + job["id"]).json()
explorer.close()
print(job["status"], "torch" in sys.modules)
"""
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert found.stdout.split() == ["done", "False"], found.stderr
    with Reader(root / "cnn") as reader:
        assert reader.checkpoints() == [5, 10]


def test_choosing_an_item_and_gradcam_draws_the_heatmap_in_the_page(store, tmp_path, app, browser) -> None:
    root = store[0]
    with _explore_tab(app, browser, height=800) as (page, problems):
        page.fill(".explore-item", "4")
        page.select_option(".explore-method", "gradcam")
        page.click(".explore-go")
        page.wait_for_selector('.explore-pictures figure[data-picture="heatmap"] img', timeout=120_000)
        page.wait_for_function(
            "() => { const i = document.querySelector('.explore-pictures figure[data-picture=\"heatmap\"] img');"
            " return i.complete && i.naturalWidth > 0; }"
        )
        src = page.get_attribute('.explore-pictures figure[data-picture="heatmap"] img', "src")
        heatmap = '.explore-pictures figure[data-picture="heatmap"] img'
        assert page.eval_on_selector(heatmap, "(i) => i.naturalWidth") == 28  # the item's 28 x 28 pixels
        assert "gradcam" in page.inner_text(".explore-result") and "item 4" in page.inner_text(".explore-result")
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
    client = TestClient(app, base_url=LOCAL)
    shown = _png(client, src)  # the page's address, relative to it
    key = src.split("key=")[1].split("&")[0]
    stored = np.asarray(PILImage.open(root / "cnn" / "explore" / key / "heatmap.png").convert("RGB"))
    np.testing.assert_array_equal(shown, stored)
    assert not problems


def test_a_notebooks_model_and_data_objects_and_the_command_lines_factories(store, monkeypatch) -> None:
    """ds.board(model=object, data=object) saves them for the worker; deepscope board --model/--data hands the
    factories' names over as they are."""
    from deepscope import cli
    from deepscope.dashboard import explore

    root, x, _ = store
    model = FashionCNN()
    app = create_app(root)
    with pytest.raises(ds.BadInputError, match="both model= and data="):
        explore(app, model, None)
    explore(app, model, (x, torch.arange(6)))
    explorer = app.state.views["explore"].explorer
    try:
        client = TestClient(app, base_url=LOCAL)
        assert client.get("/api/views").json()["explore"] is True
        job = _done(
            client, client.post("/api/explore/jobs", json={"run": "cnn", "item": 2, "method": "saliency"}).json()
        )
        assert job["status"] == "done" and job["result"]["step"] == 10
    finally:
        explorer.close()
    seen: dict[str, Any] = {}
    monkeypatch.setattr("deepscope.dashboard.serve", lambda *args, **kwargs: seen.update(kwargs))
    assert cli.main(["board", str(root), "--model", "pkg.models:make", "--data", "pkg.data:make"]) == 0
    assert seen["model"] == "pkg.models:make" and seen["data"] == "pkg.data:make"


def _upload(client: TestClient, picture: np.ndarray, fmt: str = "PNG") -> dict[str, Any]:
    import base64

    buffer = io.BytesIO()
    PILImage.fromarray(picture).save(buffer, format=fmt)
    body = {"run": "cnn", "image": base64.b64encode(buffer.getvalue()).decode()}
    answer = client.post("/api/explore/uploads", json=body)
    assert answer.status_code == 200, answer.text
    return _typed(typed.Uploaded, answer.json())


def test_an_uploaded_image_is_explained_like_an_item(store, client) -> None:
    """The upload is kept in the run's explore/uploads/ under its hash; the worker decodes it to the data's shape
    (grey, 28 x 28, values in [0, 1]) and the heatmap equals ds.explain on that tensor."""
    root, _, states = store
    picture = (np.random.default_rng(3).random((40, 56, 3)) * 255).astype(np.uint8)  # RGB, another size
    found = _upload(client, picture)
    assert sorted(p.name for p in (root / "cnn" / "explore" / "uploads").iterdir()) == [found["upload"]]
    job = _done(client, client.post("/api/explore/jobs", json={"run": "cnn", "upload": found["upload"],
                                                               "method": "gradcam"}).json())  # fmt: skip
    assert job["status"] == "done", job
    grey = PILImage.fromarray(picture).convert("L").resize((28, 28), PILImage.BILINEAR)
    x = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255)[None, None]
    model = FashionCNN()
    model.load_state_dict(states[10])
    e = ds.explain(model.eval(), x, "gradcam")
    expected = np.round(np.clip(render.colorize(e.heatmap[0]), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_png(client, job["urls"]["heatmap"]), expected)
    assert job["result"]["upload"] == found["upload"] and job["result"]["label"] is None
    assert job["result"]["item"] is None


def test_uploads_too_large_or_not_images_or_forged_are_refused(store, client) -> None:
    import base64

    from deepscope.dashboard.views.explore.data import MAX_UPLOAD

    root = store[0]
    uploads = root / "cnn" / "explore" / "uploads"
    before = sorted(uploads.iterdir()) if uploads.exists() else []
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD)
    answer = client.post("/api/explore/uploads", json={"run": "cnn", "image": base64.b64encode(big).decode()})
    assert answer.status_code == 413 and "at most 4 MB" in answer.text
    huge = b'{"run": "cnn", "image": "' + b"A" * (2 * MAX_UPLOAD) + b'"}'
    answer = client.post("/api/explore/uploads", content=huge, headers=JSON)
    assert answer.status_code == 413 and "too large" in answer.text
    text = base64.b64encode(b"not an image at all").decode()
    answer = client.post("/api/explore/uploads", json={"run": "cnn", "image": text})
    assert answer.status_code == 422 and "not a PNG" in answer.text
    assert client.post("/api/explore/uploads", json={"run": "cnn", "image": "%%"}).status_code == 422
    assert client.post("/api/explore/uploads", json={"run": "../x", "image": text}).status_code == 404
    png = io.BytesIO()
    PILImage.new("L", (4, 4)).save(png, format="PNG")
    body = '{"run": "cnn", "image": "' + base64.b64encode(png.getvalue()).decode() + '"}'
    assert client.post("/api/explore/uploads", content=body, headers={"Content-Type": "text/plain"}).status_code == 403
    foreign = client.post("/api/explore/uploads", content=body, headers={**JSON, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert (sorted(uploads.iterdir()) if uploads.exists() else []) == before
    # a small file of a huge picture: stored, but the worker refuses to decode it (the job fails, the worker goes on)
    blank = io.BytesIO()
    PILImage.new("L", (7000, 6000)).save(blank, format="PNG")
    answer = client.post(
        "/api/explore/uploads", json={"run": "cnn", "image": base64.b64encode(blank.getvalue()).decode()}
    )
    job = _done(client, client.post("/api/explore/jobs", json={"run": "cnn", "upload": answer.json()["upload"],
                                                               "method": "saliency"}).json())  # fmt: skip
    assert job["status"] == "failed" and "7000 x 6000 pixels" in job["error"]
    # a job may name only an upload the board made, in the run's own folder
    for name in ("../../data.pt", "0" * 32):
        answer = client.post("/api/explore/jobs", json={"run": "cnn", "upload": name, "method": "gradcam"})
        assert answer.status_code == 422 and "no such upload" in answer.text


def test_several_methods_side_by_side(store, client) -> None:
    _, x, states = store
    methods = ["gradcam", "saliency", "integrated_gradients"]
    job = _done(client, client.post("/api/explore/jobs", json={"run": "cnn", "item": 1, "methods": methods,
                                                               "layer": "features.relu2"}).json())  # fmt: skip
    assert job["status"] == "done", job
    model = FashionCNN()
    model.load_state_dict(states[10])
    shown = job["result"]["explanations"]
    assert [e["method"] for e in shown] == methods and len(job["urls"]["explanations"]) == 3
    for each, urls, method in zip(shown, job["urls"]["explanations"], methods):
        layer = "features.relu2" if method == "gradcam" else None  # the layer goes to the methods that take one
        e = ds.explain(model.eval(), x[1:2], method, layer=layer)
        expected = np.round(np.clip(render.colorize(e.heatmap[0]), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(_png(client, urls["heatmap"]), expected)
        assert each["layer"] == e.layer and each["score"] == pytest.approx(float(e.scores[0]), rel=1e-5)
    for body in ({"methods": []}, {"methods": ["gradcam", "gradcam"]}, {"methods": ["gradcam", "nope"]}):
        answer = client.post("/api/explore/jobs", json={"run": "cnn", "item": 1, **body})
        assert answer.status_code == 422, body


def test_an_upload_is_explained_in_the_page_with_two_methods_side_by_side(store, tmp_path, app, browser) -> None:
    root = store[0]
    picture = (np.random.default_rng(7).random((32, 32)) * 255).astype(np.uint8)
    png = io.BytesIO()
    PILImage.fromarray(picture).save(png, format="PNG")
    with _explore_tab(app, browser, height=800) as (page, problems):
        page.set_input_files(
            ".explore-upload", files=[{"name": "mine.png", "mimeType": "image/png", "buffer": png.getvalue()}]
        )
        page.wait_for_function(
            "() => document.querySelector('.explore-upload-note').textContent.includes('will be explained')",
            timeout=30_000,
        )
        page.select_option(".explore-method", ["gradcam", "saliency"])
        page.click(".explore-go")
        saliency = '.explore-pictures figure[data-picture="heatmap"][data-method="saliency"] img'
        page.wait_for_selector(saliency, timeout=120_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.explore-pictures img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        methods = page.eval_on_selector_all(
            '.explore-pictures figure[data-picture="heatmap"]', "(fs) => fs.map((f) => f.dataset.method)"
        )
        assert sorted(methods) == ["gradcam", "saliency"]  # in the list's order
        assert "the upload mine.png" in page.inner_text(".explore-result")
        src = page.get_attribute(saliency, "src")
    key = src.split("key=")[1].split("&")[0]
    result = __import__("json").loads((root / "cnn" / "explore" / key / "result.json").read_text())
    assert result["upload"] is not None and [e["method"] for e in result["explanations"]] == methods
    # the upload is kept in the run's folder only, under the name the board made (its hash)
    assert (root / "cnn" / "explore" / "uploads" / result["upload"]).read_bytes() == png.getvalue()
    assert not problems


def test_items_filtered_by_class_prediction_and_confidence(store, client) -> None:
    """The worker predicts every item once per checkpoint (cached in the run); the board filters them."""
    _, x, states = store
    assert client.get("/api/explore/items", params={"run": "cnn", "step": 5}).status_code == 404  # not yet
    job = _done(client, client.post("/api/explore/jobs", json={"run": "cnn", "predictions": True, "step": 5}).json())
    assert job["status"] == "done" and job["result"] == {"step": 5, "items": 6}, job
    again = client.post("/api/explore/jobs", json={"run": "cnn", "predictions": True, "step": 5}).json()
    assert again["status"] == "done" and again["cached"]  # once per checkpoint
    model = FashionCNN()
    model.load_state_dict(states[5])
    with torch.no_grad():
        confidence, predicted = model.eval()(x).softmax(1).max(1)
    labels = list(range(6))
    everything = _typed(typed.Items, client.get("/api/explore/items", params={"run": "cnn", "step": 5}).json())
    assert everything["total"] == everything["matching"] == 6 and everything["step"] == 5
    assert [row["predicted"] for row in everything["items"]] == predicted.tolist()
    assert [row["confidence"] for row in everything["items"]] == pytest.approx(confidence.tolist(), rel=1e-5)
    wrong = client.get("/api/explore/items", params={"run": "cnn", "step": 5, "misclassified": "true"}).json()
    assert [row["item"] for row in wrong["items"]] == [i for i in range(6) if predicted[i] != labels[i]]
    guess = int(predicted[0])
    as_guess = client.get("/api/explore/items", params={"run": "cnn", "step": 5, "predicted": guess}).json()
    assert [row["item"] for row in as_guess["items"]] == [i for i in range(6) if predicted[i] == guess]
    three = client.get("/api/explore/items", params={"run": "cnn", "step": 5, "label": 3}).json()
    assert [row["item"] for row in three["items"]] == [3]
    middle = float(confidence.median())
    params = {"run": "cnn", "step": 5, "min_confidence": middle}
    sure = client.get("/api/explore/items", params=params).json()
    assert [row["item"] for row in sure["items"]] == [i for i in range(6) if confidence[i] >= middle - 1e-6]
    params = {"run": "cnn", "step": 5, "max_confidence": middle - 1e-6, "limit": 1}
    unsure = client.get("/api/explore/items", params=params).json()
    assert unsure["matching"] == sum(1 for c in confidence.tolist() if c < middle - 1e-6) and len(unsure["items"]) == 1
    assert client.get("/api/explore/items", params={"run": "cnn", "min_confidence": 2}).status_code == 422
    assert client.get("/api/explore/items", params={"run": "cnn", "step": 7}).status_code == 422


def test_browsing_misclassified_items_in_the_page(store, app, browser) -> None:
    _, x, states = store
    model = FashionCNN()
    model.load_state_dict(states[10])
    with torch.no_grad():
        predicted = model.eval()(x).argmax(1).tolist()
    wrong = [i for i in range(6) if predicted[i] != i]  # the labels are 0 ... 5
    assert wrong  # random weights: some items are misclassified
    with _explore_tab(app, browser, height=900) as (page, problems):
        page.click(".explore-browse summary")
        page.check(".explore-filter-misclassified")
        page.click(".explore-find")
        page.wait_for_selector(".explore-items p", timeout=120_000)
        shown = page.eval_on_selector_all(".explore-found", "(bs) => bs.map((b) => Number(b.dataset.item))")
        assert shown == wrong
        page.click(f'.explore-found[data-item="{wrong[-1]}"]')
        assert page.input_value(".explore-item") == str(wrong[-1])
    assert not problems
