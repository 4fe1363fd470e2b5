"""The board's projector: its JSON API (through FastAPI's test client) and its page (headless Chromium).

The API must serve a stored projection exactly, compute PCA as ``ds.project`` does and t-SNE in the background
with its status, find the neighbours brute force finds in the original features, serve labels and thumbnails as
logged, and refuse unknown or escaping names. The page must show the Projector tab only for runs with embeddings,
draw every point, and list a clicked point's neighbours.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, CHROMIUM_ARGS, serving

import deepscope as ds
from deepscope.embed import project
from deepscope.errors import BadInputError
from deepscope.store import Reader
from deepscope.track.records import Embedding

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope.dashboard import api, create_app
from deepscope.dashboard.views.projector.data import COMPUTED

LOCAL = "http://127.0.0.1"
N, D, CLUSTERS = 300, 16, 3
NAMES = ["cat", "dog", "<b>bird</b>"]  # a label that plotly would read as markup


def _clustered(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``D`` dimensions around ``CLUSTERS`` well-separated centres, and each point's cluster."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % CLUSTERS
    centres = 8 * rng.normal(size=(CLUSTERS, D))
    return (centres[truth] + rng.normal(size=(n, D))).astype(np.float32), truth


FEATURES, TRUTH = _clustered()
PREDICTED = np.where(np.arange(N) % 10 == 0, (TRUTH + 1) % CLUSTERS, TRUTH)  # every tenth point wrong
THUMBNAILS = np.random.default_rng(1).integers(0, 256, (N, 6, 5, 3), dtype=np.uint8)
STORED = np.random.default_rng(2).normal(size=(N, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    with ds.Run(root / "proj") as run:
        labels = [[NAMES[t], NAMES[p]] for t, p in zip(TRUTH, PREDICTED, strict=True)]
        run.log_records(
            [
                Embedding(
                    "emb",
                    0,
                    FEATURES,
                    labels=labels,
                    label_header=["label", "prediction"],
                    thumbnails=THUMBNAILS,
                    projections={"mine": STORED},
                )
            ]
        )
        run.log_embedding(FEATURES[:20], tag="tiny")  # too few points for t-SNE's default perplexity
        run.log({"loss": 1.0})
    with ds.Run(root / "scalars-only") as run:
        run.log({"loss": 1.0})
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url=LOCAL)


def _array(packed: dict[str, str], dim: int | None = None) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(packed["base64"]), packed["dtype"])
    return values.reshape(-1, dim) if dim else values


def _wait(client: TestClient, params: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Ask for a projection (a POST starts it) until the server is done computing it; the statuses seen on the way
    are checked."""
    answer = client.post("/api/projection", json=params).json()
    deadline = time.monotonic() + timeout
    seen = [0.0]
    while answer["status"] in ("queued", "running"):
        assert answer["points"] is None and time.monotonic() < deadline
        if params["name"].startswith("tsne"):  # t-SNE reports the fraction done, never going back
            assert seen[-1] <= answer["progress"] <= 1
            seen.append(answer["progress"])
        time.sleep(0.1)
        answer = client.get("/api/projection/status", params=params).json()
        assert answer["points"] is None  # the status never carries the points
    if answer["status"] == "done":
        assert answer["progress"] == 1.0
        return client.get("/api/projection", params=params).json()
    return answer


# ---- API --------------------------------------------------------------------------------------------------------


def test_embeddings_lists_size_columns_and_projections(client: TestClient) -> None:
    answer = client.get("/api/embeddings", params={"run": "proj"}).json()
    emb, tiny = answer["embeddings"]
    assert (emb["tag"], emb["n"], emb["d"], emb["columns"], emb["thumbnails"]) == (
        "emb",
        N,
        D,
        ["label", "prediction"],
        True,
    )
    assert emb["stored"] == ["mine"]
    assert emb["projections"] == ["mine", *COMPUTED]  # stored ones first
    assert (tiny["tag"], tiny["n"], tiny["columns"], tiny["thumbnails"], tiny["stored"]) == ("tiny", 20, [], False, [])


def test_stored_projection_is_served_bit_for_bit(client: TestClient) -> None:
    answer = client.get("/api/projection", params={"run": "proj", "tag": "emb", "name": "mine"}).json()
    assert (answer["status"], answer["stored"], answer["n"], answer["dim"]) == ("done", True, N, 2)
    assert answer["points"]["dtype"] == "<f4"
    np.testing.assert_array_equal(_array(answer["points"], 2), STORED)


@pytest.mark.parametrize("dim", [2, 3])
def test_pca_is_computed_at_once_as_ds_project_computes_it(client: TestClient, dim: int) -> None:
    answer = client.post("/api/projection", json={"run": "proj", "tag": "emb", "name": f"pca-{dim}d"}).json()
    assert (answer["status"], answer["stored"], answer["dim"]) == ("done", False, dim)
    expected = project(FEATURES, method="pca", dim=dim, quality=False).points.numpy()
    np.testing.assert_array_equal(_array(answer["points"], dim), expected)


def test_tsne_runs_in_the_background_and_keeps_the_classes_apart(client: TestClient) -> None:
    params = {"run": "proj", "tag": "emb", "name": "tsne-2d"}
    assert client.get("/api/projection/status", params=params).json()["status"] == "absent"  # asking starts nothing
    answer = _wait(client, params)
    assert answer["status"] == "done", answer["error"]
    points = _array(answer["points"], 2)
    assert points.shape == (N, 2) and np.isfinite(points).all()
    from deepscope.embed import knn_accuracy

    assert knn_accuracy(torch.from_numpy(points.copy()), TRUTH) > 0.95
    # Kept in memory: asked again, the same points come at once.
    again = client.get("/api/projection", params=params).json()
    assert again["status"] == "done" and again["points"] == answer["points"]


def test_a_projection_that_cannot_be_computed_says_why(client: TestClient) -> None:
    answer = _wait(client, {"run": "proj", "tag": "tiny", "name": "tsne-3d"})
    assert answer["status"] == "failed"
    assert "perplexity" in answer["error"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbors_are_brute_force_in_the_original_features(client: TestClient, metric: str) -> None:
    index, k = 7, 12
    answer = client.get(
        "/api/neighbors", params={"run": "proj", "tag": "emb", "index": index, "k": k, "metric": metric}
    ).json()
    x = FEATURES.astype(np.float64)
    if metric == "cosine":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        distance = 1 - unit @ unit[index]
    else:
        distance = np.linalg.norm(x - x[index], axis=1)
    distance[index] = np.inf  # a point is not its own neighbour
    expected = np.argsort(distance)[:k]
    assert answer["indices"] == expected.tolist()
    np.testing.assert_allclose(answer["distances"], distance[expected], rtol=1e-4, atol=1e-5)


def test_labels_come_as_codes_with_a_correct_column(client: TestClient) -> None:
    answer = client.get("/api/embedding/labels", params={"run": "proj", "tag": "emb"}).json()
    columns = {c["name"]: np.asarray(c["values"])[_array(c["codes"])] for c in answer["columns"]}
    assert list(columns) == ["label", "prediction", "correct"]
    assert columns["label"].tolist() == [NAMES[t] for t in TRUTH]
    assert columns["prediction"].tolist() == [NAMES[p] for p in PREDICTED]
    assert (columns["correct"] == "right").tolist() == (TRUTH == PREDICTED).tolist()


def test_thumbnails_are_the_logged_pixels(client: TestClient) -> None:
    from PIL import Image

    for index in (0, N - 1):
        answer = client.get("/api/thumbnail", params={"run": "proj", "tag": "emb", "index": index})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), THUMBNAILS[index])


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/embeddings", {"run": "nope"}),
        ("/api/embeddings", {"run": "../proj"}),
        ("/api/embeddings", {"run": "/etc"}),
        ("/api/embedding/labels", {"run": "proj", "tag": "nope"}),
        ("/api/embedding/labels", {"run": "proj", "tag": "loss"}),  # a tag of another kind
        ("/api/projection", {"run": "proj", "tag": "emb", "name": "nope"}),
        ("/api/projection", {"run": "proj", "tag": "emb", "name": "mine", "step": 5}),
        ("/api/projection", {"run": "proj/..", "tag": "emb", "name": "mine"}),
        ("/api/projection", {"run": "scalars-only/../proj", "tag": "emb", "name": "mine"}),
        ("/api/projection/status", {"run": "proj", "tag": "nope", "name": "pca-2d"}),
        ("/api/neighbors", {"run": "nope", "tag": "emb", "index": 0}),
        ("/api/thumbnail", {"run": "proj", "tag": "tiny", "index": 0}),  # no thumbnails logged
        ("/api/thumbnail", {"run": "proj", "tag": "emb", "index": N}),
        ("/api/thumbnail", {"run": "..", "tag": "emb", "index": 0}),
    ],
)
def test_unknown_or_escaping_names_are_404(client: TestClient, route: str, params: dict[str, Any]) -> None:
    answer = client.get(route, params=params)
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"]


@pytest.mark.parametrize("params", [{"index": N}, {"index": 0, "metric": "manhattan"}, {"index": 0, "k": N}])
def test_bad_neighbour_requests_are_422(client: TestClient, params: dict[str, Any]) -> None:
    answer = client.get("/api/neighbors", params={"run": "proj", "tag": "emb", **params})
    assert answer.status_code == 422, answer.text


def test_projector_tab_only_with_an_embedding(root: Path, tmp_path: Path) -> None:
    assert api.views(root)["projector"] is True
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
    assert api.views(tmp_path)["projector"] is False


def test_log_embedding_stores_projections_and_reads_them_back(tmp_path: Path) -> None:
    pca = project(FEATURES, method="pca", dim=3, quality=False)
    with ds.Run(tmp_path / "r") as run:
        record = run.log_embedding(FEATURES, tag="emb", projections=[pca])
        run.log_embedding(FEATURES, tag="emb", projections={"flat": STORED})
    assert record.step == 0
    with Reader(tmp_path / "r") as reader:
        first, second = reader.records("emb")
    assert second.step == 1  # the tag continues from its last step
    np.testing.assert_array_equal(first.projections["pca-3d"], pca.points.numpy())
    np.testing.assert_array_equal(second.projections["flat"], STORED)
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    answer = client.get("/api/projection", params={"run": "r", "tag": "emb", "name": "pca-3d", "step": 0}).json()
    assert answer["stored"] is True
    np.testing.assert_array_equal(_array(answer["points"], 3), pca.points.numpy())


def test_embeddings_written_before_projections_existed_still_show(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "old") as run:
        run.log_records([Embedding("emb", 0, FEATURES)])
    # An older deepscope stored no "projections" key in the embedding's description.
    with sqlite3.connect(tmp_path / "old" / "run.db") as db:
        (data,) = db.execute("SELECT data FROM objects").fetchone()
        old = {k: v for k, v in json.loads(data).items() if k != "projections"}
        db.execute("UPDATE objects SET data = ?", (json.dumps(old),))
    with Reader(tmp_path / "old") as reader:
        assert reader.records("emb")[0].projections is None
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    assert client.get("/api/embeddings", params={"run": "old"}).json()["embeddings"][0]["stored"] == []
    answer = client.post("/api/projection", json={"run": "old", "tag": "emb", "name": "pca-2d"}).json()
    assert answer["status"] == "done" and not answer["stored"]


@pytest.mark.parametrize(
    ("projections", "message"),
    [
        ({"p": np.zeros((N, 4))}, "2 | 3"),
        ({"p": np.zeros((N - 1, 2))}, "2 | 3"),
        ({"p": np.full((N, 2), np.nan)}, "NaN"),
        ({"": np.zeros((N, 2))}, "name"),
        ([np.zeros((N, 2))], "dict"),
    ],
)
def test_bad_projections_are_refused_before_writing(tmp_path: Path, projections: Any, message: str) -> None:
    with ds.Run(tmp_path / "r") as run, pytest.raises(BadInputError, match=message):
        run.log_records([Embedding("emb", 0, FEATURES, projections=projections)])


# ---- the page, in headless Chromium -----------------------------------------------------------------------------

# The docs' picture is refreshed only when asked (DEEPSCOPE_UPDATE_DOCS=1): a test run leaves the checkout unchanged.
SCREENSHOT = (
    Path(__file__).resolve().parents[1] / "docs" / "images" / "board_projector.png"
    if os.environ.get("DEEPSCOPE_UPDATE_DOCS")
    else Path(tempfile.gettempdir()) / "deepscope-board_projector.png"
)


def _browser_ready() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    for module in ("playwright.sync_api", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is missing (pip install -e '.[test,board]')"
    return None


browser = pytest.mark.skipif(_browser_ready() is not None, reason=str(_browser_ready()))


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """scikit-learn's digits (shipped offline): 64-pixel features, a nearest-centroid classifier's predictions, the 8x8
    pictures as thumbnails and a t-SNE stored with them, as seed 000's exercise logs them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    centroids = np.stack([x[::4][y[::4] == c].mean(axis=0) for c in range(10)])
    predicted = np.linalg.norm(x[:, None] - centroids, axis=2).argmin(axis=1)  # nearest centroid: 9 in 10 right
    pictures = (digits.images * (255 / 16)).astype(np.uint8)
    root = tmp_path_factory.mktemp("digits")
    tsne = project(x, method="tsne", dim=2, progress=False, quality=False, n_iter=250)
    with ds.Run(root / "digits") as run:
        labels = [[str(a), str(b)] for a, b in zip(y, predicted, strict=True)]
        header = ["label", "prediction"]
        run.log_records([Embedding("test/features", 0, x, labels, header, pictures, projections={"tsne-2d": tsne})])
        run.log_embedding(x[:200], tag="zz/small")  # nothing stored: the board computes its t-SNE
        run.log({"loss": 1.0})
    return root, y, predicted


@pytest.fixture(scope="module")
def page(digits_root: tuple[Path, np.ndarray, np.ndarray]) -> Iterator[tuple[Any, list[str], str]]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with serving(create_app(digits_root[0])) as url, sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        tab = chromium.new_page(viewport={"width": 1400, "height": 860})
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.goto(f"{url}/?view=projector")
        tab.wait_for_selector('#tabs button[data-view="projector"]', timeout=15_000)
        yield tab, problems, f"{url}/"
        chromium.close()


PLOT = '.view[data-view="projector"] .projector-plot'


DRAWN = f"""() => {{ const traces = (document.querySelector('{PLOT}').data || []).filter((t) => t.meta === 'points');
                    return traces.reduce((sum, t) => sum + t.x.length, 0) === 1797; }}"""


def _points(tab: Any) -> tuple[set[str], int]:
    """The trace types drawing the points, as plotly drew them, and how many points they draw together."""
    traces = tab.evaluate(
        f"""() => {{ const gd = document.querySelector('{PLOT}');
                     return gd.data.flatMap(
                         (t, i) => t.meta === 'points' ? [[gd._fullData[i].type, t.x.length]] : []); }}"""
    )
    return {kind for kind, _ in traces}, sum(n for _, n in traces)


@browser
def test_projector_draws_every_point_and_lists_a_clicked_points_neighbours(page: tuple[Any, list[str], str]) -> None:
    tab, problems, _ = page
    tabs = tab.eval_on_selector_all("#tabs button", "(bs) => bs.map((b) => b.dataset.view)")
    assert tabs == ["scalars", "projector"]
    tab.wait_for_function(DRAWN, timeout=20_000)
    assert _points(tab) == ({"scattergl"}, 1797)
    assert tab.input_value('.view[data-view="projector"] aside select >> nth=2') == "tsne-2d"
    # A real click on a point: the page lists that point's neighbours in the 64-pixel space.
    x, y = tab.evaluate(
        f"""() => {{ const gd = document.querySelector('{PLOT}'); const f = gd._fullLayout;
                     const r = gd.getBoundingClientRect();
                     return [r.left + f._size.l + f.xaxis.l2p(gd.data[0].x[100]),
                             r.top + f._size.t + f.yaxis.l2p(gd.data[0].y[100])]; }}"""
    )
    tab.mouse.move(x - 3, y)
    tab.mouse.move(x, y)
    tab.wait_for_selector(".hover-card img", state="visible", timeout=10_000)  # the hovered point's thumbnail
    tab.mouse.click(x, y)
    tab.wait_for_selector(".neighbors .neighbor:not(.query)", timeout=10_000)
    picked = int(tab.text_content(".neighbors .neighbor.query .title").lstrip("#"))
    shown = tab.eval_on_selector_all(".neighbors .neighbor:not(.query)", "(ns) => ns.map((n) => +n.dataset.index)")
    from sklearn.datasets import load_digits

    data = load_digits().data
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    distance = 1 - unit @ unit[picked]
    distance[picked] = np.inf
    np.testing.assert_allclose(np.sort(distance[shown]), np.sort(distance)[:10], rtol=1e-4)
    assert len(shown) == 10
    # Neighbours are drawn over the points; their thumbnails load.
    roles = f"() => document.querySelector('{PLOT}').data.map((t) => t.meta).filter((m) => m !== 'points')"
    tab.wait_for_function(f"() => ({roles})().join() === 'neighbours,query'")
    tab.wait_for_function("() => [...document.querySelectorAll('.neighbors img')].every((i) => i.naturalWidth === 8)")
    tab.mouse.move(x, y + 1)
    tab.screenshot(path=str(SCREENSHOT))
    assert not problems


@browser
def test_search_highlights_matching_labels(
    page: tuple[Any, list[str], str], digits_root: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    tab, problems, _ = page
    _, truth, predicted = digits_root
    tab.wait_for_function(DRAWN, timeout=20_000)
    tab.select_option('.view[data-view="projector"] aside select >> nth=3', "label")
    tab.fill('.view[data-view="projector"] aside input[type="text"]', "7")
    tab.wait_for_function(f"() => document.querySelector('{PLOT}').data.some((t) => t.marker.symbol === 'circle-open')")
    count = tab.evaluate(
        f"() => document.querySelector('{PLOT}').data.find((t) => t.marker.symbol === 'circle-open').x.length"
    )
    assert count == int(((truth == 7) | (predicted == 7)).sum())  # "7" in the label or the prediction column
    tab.fill('.view[data-view="projector"] aside input[type="text"]', "")
    assert not problems


@browser
def test_switching_to_a_computed_3d_projection(page: tuple[Any, list[str], str]) -> None:
    tab, problems, _ = page
    tab.select_option('.view[data-view="projector"] aside select >> nth=2', "pca-3d")
    tab.wait_for_function(f"() => document.querySelector('{PLOT}').data?.[0]?.type === 'scatter3d'", timeout=20_000)
    assert _points(tab) == ({"scatter3d"}, 1797)
    tab.select_option('.view[data-view="projector"] aside select >> nth=2', "tsne-2d")
    tab.wait_for_function(f"() => document.querySelector('{PLOT}').data?.[0]?.type === 'scattergl'", timeout=20_000)
    assert not problems


@browser
def test_a_projection_computed_on_the_server_shows_progress_then_points(page: tuple[Any, list[str], str]) -> None:
    tab, problems, _ = page
    tab.select_option('.view[data-view="projector"] aside select >> nth=1', "zz/small")
    tab.wait_for_function(f"() => document.querySelector('{PLOT}').data?.[0]?.x?.length === 200", timeout=20_000)
    assert tab.input_value('.view[data-view="projector"] aside select >> nth=2') == "pca-2d"  # computed at once
    tab.select_option('.view[data-view="projector"] aside select >> nth=2', "tsne-2d")
    tab.wait_for_selector('.view[data-view="projector"] aside progress', state="visible", timeout=5_000)
    assert "on the server" in tab.text_content('.view[data-view="projector"] aside p.note')
    tab.wait_for_selector('.view[data-view="projector"] aside progress', state="hidden", timeout=60_000)
    assert "computed on the server" in tab.text_content('.view[data-view="projector"] aside p.note')
    assert _points(tab) == ({"scattergl"}, 200)
    tab.select_option('.view[data-view="projector"] aside select >> nth=1', "test/features")
    tab.wait_for_function(DRAWN, timeout=20_000)
    assert not problems
