"""The board's server and JSON API, through FastAPI's test client, against runs each test writes with ds.Run."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import deepscope as ds
from deepscope.evaluate.classification import binary_report, confusion_matrix
from deepscope.track.records import Graph, Histogram, Image

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope import dashboard as board_module
from deepscope.dashboard import api, create_app
from deepscope.dashboard.server import COMPILE_HINT
from deepscope.dashboard.views.distributions.data import DEFAULT_MAX_STEPS

LOCAL = "http://127.0.0.1"
SPIKE_STEP = 1234


def _write_runs(root: Path) -> dict[str, np.ndarray]:
    """Two finished runs (one nested) with every kind the board shows; returns the logged loss values."""
    rng = np.random.default_rng(0)
    losses = {}
    for name, scale in (("relu", 1.0), ("group/tanh", 2.0)):
        values = scale * rng.random(5000)
        values[SPIKE_STEP] = 1e6  # a spike that downsampling must keep
        values[10] = float("nan")
        values[11] = float("inf")
        values[12] = float("-inf")
        losses[name] = values
        with ds.Run(root / name, config={"scale": scale}) as run:
            run.log_series("train/loss", np.arange(5000), values, epochs=np.arange(5000) // 1000)
            run.log({"val/acc": 0.5}, step=0)
            run.log_records(
                [
                    Histogram(
                        "weight/fc",
                        step,
                        -1.0,
                        1.0,
                        np.array([1, 2, 3, 4]),
                        layer="fc",
                        kind="weight",
                        mean=0.1 * step,
                        std=1.0,
                        zero_fraction=0.0,
                        norm=2.0,
                        count=10,
                    )
                    for step in range(3)
                ]
            )
            run.log_records(
                [
                    Graph(
                        [{"name": "", "type": "Net", "parent": None, "params": 3, "shape": [1]}],
                        None,
                        "unavailable: test",
                    )
                ]
            )
            pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
            run.log_records([Image("samples", step, pixels + step, caption=f"step {step}") for step in range(2)])
            run.note("first note", step=0)
            run.note("second <b>note</b>", step=5)
    return losses


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("runs")
    losses = _write_runs(root)
    broken = root / "broken"
    broken.mkdir()
    (broken / "run.db").write_bytes(b"this is not a database" * 100)
    return root, losses


@pytest.fixture(scope="module")
def client(store: tuple[Path, dict[str, np.ndarray]]) -> TestClient:
    return TestClient(create_app(store[0]), base_url=LOCAL)


def _no_bare_constants(name: str) -> float:
    raise AssertionError(f"the answer holds a bare {name}, which is not JSON")


def _decode(values: list) -> np.ndarray:
    return np.array([float(v.replace("Infinity", "inf")) if isinstance(v, str) else v for v in values])


# ---- what the views answer ----------------------------------------------------------------------------------------


def test_runs_lists_every_run_sorted_with_tags_and_keeps_unreadable_ones(client: TestClient) -> None:
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["broken", "group/tanh", "relu"]
    broken, tanh, relu = runs
    assert broken["status"] == "unreadable" and broken["tags"] == {} and "not a readable" in broken["error"]
    assert relu["status"] == tanh["status"] == "finished"
    assert relu["tags"] == {
        "train/loss": "scalar",
        "val/acc": "scalar",
        "weight/fc": "histogram",
        "model": "graph",
        "samples": "image",
        "notes": "text",
    }
    assert isinstance(relu["created_at"], float)


def test_views_are_the_kinds_present(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/api/views").json() == {
        "scalars": True,
        "distributions": True,
        "graph": True,
        "images": True,
        "explanations": False,
        "explore": False,  # a board given no model
        "evaluation": False,
        "text": True,
        "projector": False,
        "features": False,
        "hparams": True,  # the runs have a config
    }
    with ds.Run(tmp_path / "only-scalars") as run:
        run.log({"x": 1.0})
    assert api.views(tmp_path) == {
        "scalars": True,
        "distributions": False,
        "graph": False,
        "images": False,
        "explanations": False,
        "explore": False,
        "evaluation": False,
        "text": False,
        "projector": False,
        "features": False,
        "hparams": False,  # no config
    }


def test_scalars_are_the_logged_values_with_non_finite_as_strings(
    client: TestClient, store: tuple[Path, dict[str, np.ndarray]]
) -> None:
    logged = store[1]["group/tanh"]
    answer = client.get("/api/scalars", params={"run": "group/tanh", "tag": "train/loss", "max_points": 10_000})
    data = answer.json()
    assert data["total"] == 5000 and not data["downsampled"]
    assert data["steps"] == list(range(5000))
    assert data["epochs"] == [s // 1000 for s in range(5000)]
    assert data["values"][10:13] == ["NaN", "Infinity", "-Infinity"]
    np.testing.assert_array_equal(_decode(data["values"]), logged)
    json.loads(answer.text, parse_constant=_no_bare_constants)  # strict JSON: no bare NaN/Infinity anywhere
    assert len(data["wall_times"]) == 5000 and all(math.isfinite(w) for w in data["wall_times"])


def test_scalars_downsampled_keep_extremes_and_zoom_refines(client: TestClient) -> None:
    params = {"run": "relu", "tag": "train/loss", "max_points": 200}
    data = client.get("/api/scalars", params=params).json()
    assert data["downsampled"] and data["total"] == 5000 and 2 < len(data["steps"]) <= 200
    assert SPIKE_STEP in data["steps"] and 1e6 in data["values"]
    assert {"NaN", "Infinity", "-Infinity"} <= {v for v in data["values"] if isinstance(v, str)}
    zoom = client.get("/api/scalars", params={**params, "start": 1000, "end": 1099}).json()
    assert zoom["steps"] == list(range(1000, 1100)) and zoom["total"] == 100 and not zoom["downsampled"]


@pytest.mark.parametrize(
    "params",
    [{}, {"max_points": 10_000}, {"max_points": 200}, {"start": 1000, "end": 1099}, {"start": 4990, "max_points": 4}],
)
@pytest.mark.parametrize("runs", [["relu", "group/tanh"], ["group/tanh"], None])
def test_scalars_batch_is_the_per_run_answers(client: TestClient, params: dict, runs: list[str] | None) -> None:
    """The batched view answers exactly what /api/scalars answers for each run, in the order asked (all runs with
    the tag, by name, when none are named), twice in a row (the second time from the cache)."""
    named = runs if runs is not None else ["group/tanh", "relu"]  # "broken" has no tags
    expected = [client.get("/api/scalars", params={"run": r, "tag": "train/loss", **params}).json() for r in named]
    for _ in range(2):
        query = {"tag": "train/loss", **({"runs": runs} if runs is not None else {}), **params}
        answer = client.get("/api/scalars/batch", params=query)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        batch = json.loads(answer.text, parse_constant=_no_bare_constants)
        assert batch == {"tag": "train/loss", "series": expected, "unreadable": []}


@pytest.mark.parametrize(
    ("runs", "tag", "named"),
    [
        (["relu", "nope"], "train/loss", "'nope'"),
        (["relu", "../runs0/relu"], "train/loss", "'../runs0/relu'"),
        (["relu"], "nope", "'nope'"),
        (["relu"], "notes", "'notes'"),  # a tag of another kind
    ],
)
def test_scalars_batch_unknown_run_or_tag_is_404_naming_it(
    client: TestClient, runs: list[str], tag: str, named: str
) -> None:
    answer = client.get("/api/scalars/batch", params={"tag": tag, "runs": runs})
    assert answer.status_code == 404 and named in answer.json()["detail"]


def test_scalars_batch_lists_an_unreadable_run_and_answers_for_the_others(client: TestClient) -> None:
    answer = client.get("/api/scalars/batch", params={"tag": "train/loss", "runs": ["relu", "broken"]})
    assert answer.status_code == 200
    batch = answer.json()
    assert [s["run"] for s in batch["series"]] == ["relu"]
    assert [u["run"] for u in batch["unreadable"]] == ["broken"] and "not a readable" in batch["unreadable"][0]["error"]


def test_scalars_batch_sees_a_finished_run_resumed(tmp_path: Path) -> None:
    """A cached answer is never served once the run's file changed: resumed and closed again, and while running."""
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    params = {"tag": "loss", "runs": ["a"]}
    with ds.Run(tmp_path / "a") as run:
        run.log({"loss": 1.0}, step=0)
    for _ in range(2):
        assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0]
    with ds.Run(tmp_path / "a", resume=True) as run:
        run.log({"loss": 0.5}, step=1)
        run.flush()
        assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5]
        run.log({"loss": 0.25}, step=2)
        run.flush()
        assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5, 0.25]
    run = ds.Run(tmp_path / "a", resume=True)
    run.log({"loss": 0.125}, step=3)
    run.close()
    assert client.get("/api/scalars/batch", params=params).json()["series"][0]["values"] == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("params", [{"max_points": 10_000}, {"max_points": 200}, {"start": 5, "end": 20}])
@pytest.mark.parametrize("route", ["/api/scalars", "/api/scalars/batch"])
def test_scalars_in_base64_are_the_json_answer_bit_for_bit(
    client: TestClient, store: tuple[Path, dict[str, np.ndarray]], route: str, params: dict
) -> None:
    """``encoding=base64`` (what the page asks for) sends each array's little-endian bytes: decoded, they are the
    JSON answer's numbers, and the values are the logged float64s to the bit, NaN and infinities included."""
    query = {"tag": "train/loss", **params, **({"run": "relu"} if route == "/api/scalars" else {"runs": ["relu"]})}
    plain = client.get(route, params=query).json()
    packed = client.get(route, params={**query, "encoding": "base64"})
    json.loads(packed.text, parse_constant=_no_bare_constants)
    if route != "/api/scalars":
        plain, packed_series = plain["series"][0], packed.json()["series"][0]
    else:
        packed_series = packed.json()
    arrays = {}
    for name, dtype in (("steps", "<i8"), ("values", "<f8"), ("epochs", "<i8"), ("wall_times", "<f8")):
        column = packed_series.pop(name)
        assert column["dtype"] == dtype
        arrays[name] = np.frombuffer(base64.b64decode(column["base64"]), dtype=dtype)
    assert packed_series == {k: v for k, v in plain.items() if k not in arrays}  # run, tag, total, downsampled
    assert arrays["steps"].tolist() == plain["steps"] and arrays["epochs"].tolist() == plain["epochs"]
    assert arrays["wall_times"].tolist() == plain["wall_times"]  # JSON floats round-trip exactly
    np.testing.assert_array_equal(arrays["values"], _decode(plain["values"]))
    logged = store[1]["relu"][arrays["steps"]]
    assert arrays["values"].tobytes() == logged.tobytes()
    if "start" in params:
        assert np.isnan(arrays["values"][10 - 5]) and arrays["values"][11 - 5] == np.inf


def test_unknown_encoding_is_422(client: TestClient) -> None:
    for route, params in (("/api/scalars", {"run": "relu"}), ("/api/scalars/batch", {})):
        answer = client.get(route, params={"tag": "train/loss", "encoding": "msgpack", **params})
        assert answer.status_code == 422 and "encoding" in answer.json()["detail"]


def test_histograms_distributions(client: TestClient) -> None:
    data = client.get("/api/histograms", params={"run": "relu", "tag": "weight/fc"}).json()
    assert (data["layer"], data["kind"]) == ("fc", "weight")
    assert data["total"] == data["tag_total"] == 3 and not data["downsampled"]
    assert [p["step"] for p in data["points"]] == [0, 1, 2]
    first = data["points"][1]
    assert first["counts"] == [1, 2, 3, 4] and (first["low"], first["high"]) == (-1.0, 1.0)
    assert first["mean"] == pytest.approx(0.1) and first["count"] == 10


def test_graph_text_and_images(client: TestClient) -> None:
    g = client.get("/api/graph", params={"run": "relu"}).json()
    assert g["modules"][0]["type"] == "Net" and g["ops"] is None and g["ops_method"] == "unavailable: test"
    t = client.get("/api/text", params={"run": "relu", "tag": "notes"}).json()
    assert t["points"] == [{"step": 0, "text": "first note"}, {"step": 5, "text": "second <b>note</b>"}]
    images = client.get("/api/images", params={"run": "group/tanh", "tag": "samples"}).json()["points"]
    assert [(p["step"], p["width"], p["height"]) for p in images] == [(0, 6, 4), (1, 6, 4)]
    from PIL import Image as PILImage

    for p in images:
        answer = client.get(p["url"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        pixels = np.asarray(PILImage.open(io.BytesIO(answer.content)))
        np.testing.assert_array_equal(pixels, np.arange(72, dtype=np.uint8).reshape(4, 6, 3) + p["step"])


def _feature_run(root: Path) -> dict[int, ds.features.Filters]:
    """A run whose conv filters change between three checkpoints, with their evolution logged for the Features tab
    (and an image outside ``features/`` that the tab must not list); returns the filters per step."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    with ds.Run(root / "feat") as run:
        for step in (0, 10, 20):
            with torch.no_grad():
                model[0].weight.mul_(-2.0).add_(0.1)
            run.checkpoint(model, step=step)
        result = ds.features.evolution(run, lambda: model, "0", what="filters", progress=False)
        result.log(run)
        run.log_records([ds.features.filters(model, "2").to_records("features/2/filters", 20)[0]])
        run.log_records([Image("features/2/top_patches/1", 20, np.zeros((3, 3), np.uint8))])  # one unit's patches
        run.log_records([Image("features", 0, np.zeros((2, 2), np.uint8)), Image("other/x", 0, np.zeros((2, 2)))])
    return dict(zip(result.steps, result.filters))


def test_features_lists_layers_kinds_steps_and_noise(tmp_path: Path) -> None:
    shown = _feature_run(tmp_path)
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    assert client.get("/api/views").json()["features"] is True
    answer = client.get("/api/features", params={"run": "feat"}).json()
    assert answer["steps"] == [0, 10, 20]
    assert [layer["layer"] for layer in answer["layers"]] == ["0", "2"]
    (kind,) = answer["layers"][0]["kinds"]
    assert (kind["what"], kind["tag"], kind["steps"]) == ("filters", "features/0/filters", [0, 10, 20])
    noise = kind["scalars"]["noise"]
    assert noise["steps"] == [0, 10, 20]
    np.testing.assert_allclose(noise["values"], [float(f.noise.mean()) for f in shown.values()], rtol=1e-6)
    assert [(k["what"], k["steps"]) for k in answer["layers"][1]["kinds"]] == [
        ("filters", [20]),
        ("top_patches/1", [20]),
    ]
    # the pixels come from the Images API, one picture per checkpoint, each the grid of that checkpoint's filters
    from PIL import Image as PILImage

    points = client.get("/api/images", params={"run": "feat", "tag": kind["tag"]}).json()["points"]
    for point, f in zip(points, shown.values()):
        pixels = np.asarray(PILImage.open(io.BytesIO(client.get(point["url"]).content)))
        np.testing.assert_array_equal(pixels, f.grid())
    assert client.get("/api/features", params={"run": "nothing"}).status_code == 404
    # a directory whose only pictures are features: the Features tab, and no empty Images tab
    only = tmp_path / "only"
    with ds.Run(only / "f") as run:
        run.log_records([Image("features/conv/filters", 0, np.zeros((2, 2), np.uint8))])
    assert {k: v for k, v in api.views(only).items() if k in ("images", "features")} == {
        "images": False,
        "features": True,
    }


def test_page_and_plotly_come_from_this_installation(client: TestClient) -> None:
    import plotly

    js = client.get("/static/plotly.min.js")
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert js.status_code == 200 and js.content == COMPILE_HINT + bundled.read_bytes()
    assert js.content.startswith(b"//")  # the hint is a comment: the script is plotly's, byte for byte
    # the page's first build: plotly's basic one, shipped with deepscope (dashboard/vendor), byte for byte
    basic = client.get("/static/plotly-basic.min.js")
    vendored = Path(board_module.__file__).parent / "vendor" / "plotly-basic.min.js"
    assert basic.status_code == 200 and basic.content == COMPILE_HINT + vendored.read_bytes()
    assert b"plotly.js (basic - minified)" in basic.content[:200]
    if (Path(board_module.__file__).parent / "static" / "index.html").is_file():
        assert client.get("/").status_code == 200


# ---- evaluation and explanations ----------------------------------------------------------------------------------

HOSTILE_CLASS = "<b>bird</b>"
CLASSES = ["cat", "dog", HOSTILE_CLASS]
Y_TRUE = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 1])
Y_PRED = np.array([0, 1, 1, 1, 0, 2, 1, 0, 2, 2])
# Scores on the thresholds 0, 1/4, ..., 1 (num_thresholds=5), so the stored counts lose nothing and the curves
# must equal scikit-learn's computed from the raw scores.
BINARY = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 0])
SCORES = np.array([0.0, 0.75, 1.0, 0.25, 0.5, 0.5, 0.25, 1.0, 0.75, 0.0])


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, dict]:
    """A run with confusion matrices at two steps, a binary PR curve, one-vs-rest curves and an explanation set."""
    root = tmp_path_factory.mktemp("evaluated")
    model = _tiny_cnn()
    inputs = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    found = [ds.explain(model, inputs, method=m) for m in ("saliency", "gradcam")]
    labels = [0, 1, 2, int(model(inputs).argmax(1)[3])]  # the last one classified correctly by construction
    with ds.Run(root / "eval") as run:
        run.log_confusion_matrix(confusion_matrix(Y_TRUE[:4], Y_PRED[:4], classes=CLASSES), step=0)
        run.log_confusion_matrix(confusion_matrix(Y_TRUE, Y_PRED, classes=CLASSES), step=7)
        run.log_pr_curve(binary_report(BINARY, SCORES), step=3, tag="binary", num_thresholds=5)
        run.log_pr_curve(binary_report(Y_TRUE, np.eye(3)[Y_PRED] * 0.8 + 0.1, classes=CLASSES), tag="ovr")
        stored = run.log_explanations(found, labels=labels, predictions=model(inputs), classes=CLASSES, step=2)
    client = TestClient(create_app(root), base_url=LOCAL)
    return client, {"root": root, "labels": labels, "stored": stored, "model": model, "inputs": inputs}


def test_confusion_matrix_counts_normalised_and_steps(evaluated: tuple[TestClient, dict]) -> None:
    from sklearn.metrics import confusion_matrix as reference

    client, _ = evaluated
    last = client.get("/api/confusion_matrix", params={"run": "eval", "tag": "confusion_matrix"}).json()
    assert last["steps"] == [0, 7] and last["step"] == 7 and last["classes"] == CLASSES
    np.testing.assert_array_equal(last["counts"], reference(Y_TRUE, Y_PRED))
    np.testing.assert_allclose(last["normalized"], reference(Y_TRUE, Y_PRED, normalize="true"))
    assert last["accuracy"] == pytest.approx((Y_TRUE == Y_PRED).mean()) and last["total"] == 10
    first = client.get("/api/confusion_matrix", params={"run": "eval", "tag": "confusion_matrix", "step": 0}).json()
    np.testing.assert_array_equal(first["counts"], reference(Y_TRUE[:4], Y_PRED[:4], labels=[0, 1, 2]))
    assert first["normalized"][2] == [0.0, 0.0, 0.0]  # no sample of that class yet: zeros, not NaN


def test_pr_curve_gives_the_roc_pr_and_score_distributions_of_the_raw_scores(
    evaluated: tuple[TestClient, dict],
) -> None:
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

    client, _ = evaluated
    data = client.get("/api/pr_curve", params={"run": "eval", "tag": "binary"}).json()
    assert data["steps"] == [3] and data["thresholds"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    fpr, tpr, thresholds = roc_curve(BINARY, SCORES, drop_intermediate=False)
    ours = dict(zip(data["thresholds"], zip(data["fpr"], data["tpr"])))
    for f, t, threshold in zip(fpr[1:], tpr[1:], thresholds[1:]):  # sklearn's first point is "nothing positive"
        assert ours[threshold] == pytest.approx((f, t))
    assert data["auc"] == pytest.approx(roc_auc_score(BINARY, SCORES))
    precision, recall, pr_thresholds = precision_recall_curve(BINARY, SCORES)
    for p, r, threshold in zip(precision, recall, pr_thresholds):
        i = data["thresholds"].index(threshold)
        assert (data["precision"][i], data["recall"][i]) == pytest.approx((p, r))
    # Score distributions: how many of each class scored in each threshold's bin [t_i, t_i+1).
    for key, scores in (("positives", SCORES[BINARY == 1]), ("negatives", SCORES[BINARY == 0])):
        assert data[key] == [float(np.sum(scores == t)) for t in data["thresholds"]]
    tags = {r["name"]: r["tags"] for r in client.get("/api/runs").json()}["eval"]
    assert {tag for tag, kind in tags.items() if kind == "pr_curve"} == {
        "binary",
        "ovr/cat",
        "ovr/dog",
        f"ovr/{HOSTILE_CLASS}",
    }


def test_explanations_gallery_items_and_pictures(evaluated: tuple[TestClient, dict]) -> None:
    from PIL import Image as PILImage

    client, made = evaluated
    data = client.get("/api/explanations", params={"run": "eval", "tag": "explanations"}).json()
    predicted = [CLASSES[k] for k in made["model"](made["inputs"]).argmax(1).tolist()]
    assert data["methods"] == ["saliency", "gradcam"] and data["steps"] == [2]
    assert "Do not focus only on cases that are classified correctly" in data["advice"]
    assert [(i["label"], i["prediction"]) for i in data["items"]] == list(
        zip([CLASSES[k] for k in made["labels"]], predicted)
    )
    correct = [CLASSES[k] == p for k, p in zip(made["labels"], predicted)]
    assert [i["correct"] for i in data["items"]] == correct and data["misclassified"] == correct.count(False)
    assert correct[3]
    stored = made["stored"]
    item = data["items"][1]
    assert [m["method"] for m in item["maps"]] == ["saliency", "gradcam"]
    assert [m["target"] for m in item["maps"]] == [predicted[1]] * 2  # target=None: the predicted class, by name
    assert item["maps"][0]["score"] == pytest.approx(float(stored.scores[0, 1]))

    def pixels(url: str) -> np.ndarray:
        answer = client.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        return np.asarray(PILImage.open(io.BytesIO(answer.content)))

    np.testing.assert_array_equal(pixels(item["input"]), stored.inputs[1])
    np.testing.assert_array_equal(pixels(item["maps"][1]["overlay"]), stored.overlays[1, 1])
    np.testing.assert_array_equal(pixels(item["maps"][0]["heatmap"]), stored.heatmaps[0, 1])
    # The overlay is render.overlay of the input and the method's heatmap, as ds.explain's figures draw it.
    explanation = ds.explain(made["model"], made["inputs"], method="gradcam")
    np.testing.assert_array_equal(pixels(item["maps"][1]["overlay"]), np.asarray(explanation.overlay(1)))


# ---- sanity checks, faithfulness and method comparisons -----------------------------------------------------------


def _failing(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    raise ds.BadInputError(f"not for this model {HOSTILE_CLASS}")


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, dict]:
    """A run with two sanity checks (steps 0 and 4), deletion and insertion curves and a method comparison."""
    root = tmp_path_factory.mktemp("trusted")
    model = _tiny_cnn()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    cascading = ds.sanity_check(model, x, methods=["saliency", "gradcam"])
    independent = ds.sanity_check(model, x, methods=["saliency"], mode="independent")
    explained = [ds.explain(model, x, method=m) for m in ("saliency", "gradcam")]
    deletion = [ds.faithfulness(model, x, e, steps=5) for e in explained]
    insertion = [ds.faithfulness(model, x, e, metric="insertion", steps=5) for e in explained]
    comparison = ds.compare_methods(
        model, x, methods=["gradcam", _failing, "saliency"], metrics=("insertion", "deletion"), steps=5, progress=False
    )
    with ds.Run(root / "trust") as run:
        run.log_sanity_check(independent, step=0)
        run.log_sanity_check(cascading, step=4)
        run.log_faithfulness(deletion, tag="faithfulness/deletion")
        run.log_faithfulness(insertion, tag="faithfulness/insertion")
        run.log_method_comparison(comparison)
    made = {"cascading": cascading, "independent": independent, "deletion": deletion, "comparison": comparison}
    return TestClient(create_app(root), base_url=LOCAL), made


@pytest.mark.parametrize("step", [None, 0])
def test_sanity_check_curves_are_the_checks_mean_and_std(trusted: tuple[TestClient, dict], step: int | None) -> None:
    client, made = trusted
    params = {"run": "trust", "tag": "sanity_check"} | ({} if step is None else {"step": step})
    answer = client.get("/api/sanity_check", params=params).json()
    check = made["cascading" if step is None else "independent"]
    assert answer["steps"] == [0, 4] and answer["step"] == (4 if step is None else 0)
    assert (answer["mode"], answer["methods"], answer["stages"]) == (check.mode, check.methods, check.steps)
    assert answer["metrics"] == ["spearman", "spearman_abs", "ssim", "hog"] and answer["inputs"] == 3
    for method in check.methods:
        for metric in answer["metrics"]:
            scores = check.scores[method][metric].numpy().astype(np.float64)
            assert answer["curves"][method][metric] == {
                "mean": scores.mean(axis=1).tolist(),
                "std": scores.std(axis=1).tolist(),  # population std, as SanityCheck.figure draws the band
            }


def test_faithfulness_curves_are_the_results_mean_curves_and_aucs(trusted: tuple[TestClient, dict]) -> None:
    client, made = trusted
    answer = client.get("/api/faithfulness", params={"run": "trust", "tag": "faithfulness/deletion"}).json()
    assert (answer["metric"], answer["probability"], answer["inputs"], answer["step"]) == ("deletion", True, 3, 0)
    assert answer["fractions"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-7)
    assert [c["method"] for c in answer["curves"]] == ["saliency", "gradcam"]
    for curve, result in zip(answer["curves"], made["deletion"]):
        values = result.curves.numpy().astype(np.float64)
        assert curve["mean"] == values.mean(axis=0).tolist() and curve["std"] == values.std(axis=0).tolist()
        assert curve["auc"] == float(result.auc.mean())
        assert curve["mean"][0] == pytest.approx(float(result.curves[:, 0].mean()))  # the clean input's probability
    inserted = client.get("/api/faithfulness", params={"run": "trust", "tag": "faithfulness/insertion"}).json()
    assert inserted["metric"] == "insertion"


def test_method_comparison_rows_best_first_with_failures_and_reasons(trusted: tuple[TestClient, dict]) -> None:
    client, made = trusted
    comparison = made["comparison"]
    answer = client.get("/api/method_comparison", params={"run": "trust", "tag": "method_comparison"}).json()
    assert answer["metrics"] == ["insertion", "deletion"] and answer["sort_by"] == "insertion"
    assert answer["lower_is_better"] == {"insertion": False, "deletion": True}
    assert [row["method"] for row in answer["rows"]] == [row.method for row in comparison.rows]
    assert answer["rows"][-1] == {
        "method": "_failing",
        "values": {"insertion": None, "deletion": None},
        "std": {"insertion": None, "deletion": None},
        "error": f"not for this model {HOSTILE_CLASS}",
    }
    worked = answer["rows"][:-1]
    assert {row["method"] for row in worked} == {"gradcam", "saliency", "random"}
    insertion = [row["values"]["insertion"] for row in worked]
    assert insertion == sorted(insertion, reverse=True)  # higher insertion AUC is better: best first
    for row, score in zip(worked, comparison.rows):
        assert row["values"] == {"insertion": score.insertion, "deletion": score.deletion} and row["error"] is None
        spread = {m: float(comparison.aucs[score.method][m].numpy().astype(np.float64).std()) for m in row["std"]}
        assert row["std"] == spread


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/sanity_check", {"run": "nope", "tag": "sanity_check"}),
        ("/api/sanity_check", {"run": "trust", "tag": "method_comparison"}),  # a tag of another kind
        ("/api/sanity_check", {"run": "trust", "tag": "sanity_check", "step": 2}),  # no record there
        ("/api/faithfulness", {"run": "trust", "tag": "faithfulness"}),  # the curves live under faithfulness/<metric>
        ("/api/faithfulness", {"run": "../trust", "tag": "faithfulness/deletion"}),
        ("/api/method_comparison", {"run": "trust", "tag": "sanity_check"}),
        ("/api/method_comparison", {"run": "trust", "tag": "method_comparison", "step": 1}),
    ],
)
def test_sanity_faithfulness_and_comparison_404(trusted: tuple[TestClient, dict], route: str, params: dict) -> None:
    answer = trusted[0].get(route, params=params)
    assert answer.status_code == 404 and answer.json()["detail"]


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/confusion_matrix", {"run": "nope", "tag": "confusion_matrix"}),
        ("/api/confusion_matrix", {"run": "eval", "tag": "binary"}),  # a tag of another kind
        ("/api/confusion_matrix", {"run": "eval", "tag": "confusion_matrix", "step": 3}),  # no record there
        ("/api/pr_curve", {"run": "eval", "tag": "confusion_matrix"}),
        ("/api/pr_curve", {"run": "eval", "tag": "ovr"}),  # one-vs-rest curves live under ovr/<class>
        ("/api/pr_curve", {"run": "../eval", "tag": "binary"}),
        ("/api/explanations", {"run": "eval", "tag": "nope"}),
        ("/api/explanations", {"run": "eval", "tag": "explanations", "step": 0}),
        ("/api/file", {"run": "eval", "path": "files/../run.db"}),
    ],
)
def test_evaluation_and_explanations_404(evaluated: tuple[TestClient, dict], route: str, params: dict) -> None:
    answer = evaluated[0].get(route, params=params)
    assert answer.status_code == 404 and answer.json()["detail"]


@pytest.mark.parametrize(
    ("logs", "shown"),
    [
        ("confusion", {"evaluation"}),
        ("pr curve", {"evaluation"}),
        ("explanations", {"explanations"}),
        ("sanity check", {"evaluation"}),
        ("faithfulness", {"evaluation"}),
        ("method comparison", {"evaluation"}),
        ("nothing of these", set()),
    ],
)
def test_evaluation_and_explanation_tabs_appear_only_with_their_data(tmp_path: Path, logs: str, shown: set) -> None:
    with ds.Run(tmp_path / "r") as run:
        run.log({"x": 1.0})
        if logs == "confusion":
            run.log_confusion_matrix(confusion_matrix([0, 1], [1, 1]))
        elif logs == "pr curve":
            run.log_pr_curve(binary_report([0, 1], [0.2, 0.9]))
        elif logs == "explanations":
            run.log_explanations(ds.explain(_tiny_cnn(), torch.rand(1, 3, 8, 8), method="saliency"))
        elif logs != "nothing of these":
            x = torch.rand(1, 3, 8, 8)
            if logs == "sanity check":
                run.log_sanity_check(ds.sanity_check(_tiny_cnn(), x, methods=["saliency"]))
            elif logs == "faithfulness":
                run.log_faithfulness(ds.faithfulness(_tiny_cnn(), x, ds.explain(_tiny_cnn(), x), steps=2))
            else:
                compared = ds.compare_methods(_tiny_cnn(), x, methods=["saliency"], metrics=["deletion"], steps=2)
                run.log_method_comparison(compared)
    views = TestClient(create_app(tmp_path), base_url=LOCAL).get("/api/views").json()
    assert {view for view in ("evaluation", "explanations") if views[view]} == shown


# ---- 404s and path traversal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/scalars", {"run": "nope", "tag": "train/loss"}),
        ("/api/scalars", {"run": "relu", "tag": "nope"}),
        ("/api/scalars", {"run": "relu", "tag": "notes"}),  # a tag of another kind
        ("/api/histograms", {"run": "relu", "tag": "train/loss"}),
        ("/api/graph", {"run": "relu", "tag": "notes"}),
        ("/api/images", {"run": "relu", "tag": "notes"}),
        ("/api/text", {"run": "relu", "tag": "samples"}),
        ("/api/scalars", {"run": "broken", "tag": "x"}),  # unreadable
        ("/api/scalars", {"run": "group", "tag": "x"}),  # a directory, not a run
        ("/api/scalars", {"run": "../runs0/relu", "tag": "train/loss"}),
        ("/api/scalars", {"run": "group/../relu", "tag": "train/loss"}),
        ("/api/scalars", {"run": "./relu", "tag": "train/loss"}),
        ("/api/scalars", {"run": "relu/", "tag": "train/loss"}),
        ("/api/file", {"run": "relu", "path": "run.db"}),  # only files/ is served
        ("/api/file", {"run": "relu", "path": "files/../run.db"}),
        ("/api/file", {"run": "relu", "path": "files/nope.png"}),
        ("/api/file", {"run": "relu", "path": "../group/tanh/run.db"}),
        ("/api/file", {"run": "relu", "path": "/etc/passwd"}),
        ("/api/file", {"run": "relu", "path": "files\\..\\run.db"}),
    ],
)
def test_unknown_or_escaping_names_are_404(client: TestClient, route: str, params: dict[str, str]) -> None:
    answer = client.get(route, params=params)
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"]


def test_absolute_run_names_and_symlinks_out_are_404(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    with ds.Run(outside / "secret") as run:
        run.log({"x": 1.0})
    (outside / "secret" / "files").mkdir(exist_ok=True)
    (outside / "secret" / "files" / "secret.png").write_bytes(b"png")
    served = tmp_path / "served"
    with ds.Run(served / "mine") as run:
        run.log({"x": 2.0})
    (served / "link").symlink_to(outside / "secret")
    (served / "mine" / "files").mkdir(exist_ok=True)
    (served / "mine" / "files" / "out.png").symlink_to(outside / "secret" / "files" / "secret.png")
    client = TestClient(create_app(served), base_url=LOCAL)
    assert client.get("/api/scalars", params={"run": "mine", "tag": "x"}).status_code == 200
    for run in (str(outside / "secret"), "link"):
        assert client.get("/api/scalars", params={"run": run, "tag": "x"}).status_code == 404
    assert client.get("/api/file", params={"run": "mine", "path": "files/out.png"}).status_code == 404
    assert client.get("/api/file", params={"run": "link", "path": "files/secret.png"}).status_code == 404
    assert [r["name"] for r in client.get("/api/runs").json()] == ["mine"]


def test_bad_max_points_is_422(client: TestClient) -> None:
    answer = client.get("/api/scalars", params={"run": "relu", "tag": "train/loss", "max_points": 3})
    assert answer.status_code == 422
    answer = client.get("/api/scalars/batch", params={"tag": "train/loss", "max_points": 3})
    assert answer.status_code == 422


# ---- live: new runs and new points without a restart ----------------------------------------------------------------


def test_sees_runs_created_and_points_written_after_start(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    assert client.get("/api/runs").json() == []
    with ds.Run(tmp_path / "live") as run:
        run.log({"loss": 1.0}, step=0)
        run.flush()
        listed = client.get("/api/runs").json()
        assert [(r["name"], r["status"]) for r in listed] == [("live", "running")]
        params = {"run": "live", "tag": "loss"}
        assert client.get("/api/scalars", params=params).json()["steps"] == [0]
        run.log({"loss": 0.5}, step=1)
        run.flush()
        assert client.get("/api/scalars", params=params).json()["values"] == [1.0, 0.5]
    assert client.get("/api/runs").json()[0]["status"] == "finished"


# ---- access --------------------------------------------------------------------------------------------------------


def test_token_is_required_on_every_route(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    client = TestClient(create_app(store[0], token="s3cret"), base_url="http://board.example:6006")
    routes = ("/api/runs", "/api/views", "/static/plotly.min.js", "/static/plotly-basic.min.js", "/")
    for route in (*routes, "/api/file?run=relu&path=files/x.png"):
        assert client.get(route).status_code == 401, route
        assert client.get(route, params={"token": "wrong"}).status_code == 401, route
    assert client.get("/api/runs", params={"token": "s3cret"}).status_code == 200
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_without_token_only_loopback_host_names_are_answered(client: TestClient) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example
    assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403
    for host in ("localhost:6006", "127.0.0.1:6006", "[::1]:6006"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_non_loopback_hosts_get_a_generated_token(host: str, loopback: bool) -> None:
    assert board_module.is_loopback(host) is loopback
    token = board_module.access_token(host, None)
    assert (token is None) is loopback
    if token is not None:
        assert len(token) >= 24 and token != board_module.access_token(host, None)
    assert board_module.access_token(host, "given") == "given"


# ---- packaging: notebook helper, CLI, no import cost -----------------------------------------------------------------


def test_notebook_board_serves_in_a_thread(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    shown = board_module.board(store[0], height=400, proxy=False)  # a local browser, wherever the tests run
    try:
        assert shown.url.startswith("http://127.0.0.1:")
        assert f'src="{shown.url}"' in shown._repr_html_() and 'height="400"' in shown._repr_html_()
        with urllib.request.urlopen(shown.url + "api/runs", timeout=5) as answer:
            assert [r["name"] for r in json.load(answer)] == ["broken", "group/tanh", "relu"]
    finally:
        shown.stop()
    assert not shown._thread.is_alive()


def test_importing_deepscope_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, deepscope, deepscope.dashboard, deepscope.cli;"
        "print(sorted({'fastapi', 'uvicorn', 'plotly'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from deepscope import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert cli.main(["board", str(tmp_path)]) == 1
    assert "pip install 'deepscope[board]'" in capsys.readouterr().err


def test_cli_refuses_a_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from deepscope import cli

    assert cli.main(["board", str(tmp_path / "nope"), "--port", "0"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_ds_board_is_the_notebook_entry():
    import deepscope as ds

    assert ds.board is board_module.board


def test_a_long_histogram_series_is_thinned_and_windows_show_every_step(tmp_path: Path) -> None:
    """1,200 histograms: by default at most 500 go out, spread evenly with the first and last step; a step window
    sends every histogram in it; ``max_steps`` thins further; ``tag_total`` counts every step whatever the window."""
    steps = np.arange(0, 2400, 2)
    with ds.Run(tmp_path / "long") as run:
        run.log_records(
            [
                Histogram("w", int(s), 0.0, 1.0, np.array([int(s), 1]), "fc", "weight", 0.0, 1.0, 0.0, 1.0, 1)
                for s in steps
            ]
        )
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    query = {"run": "long", "tag": "w"}
    data = client.get("/api/histograms", params=query).json()
    assert data["total"] == data["tag_total"] == 1200 and data["downsampled"]
    assert len(data["points"]) == DEFAULT_MAX_STEPS == 500
    shown = [p["step"] for p in data["points"]]
    assert shown == steps[np.linspace(0, 1199, 500).round().astype(int)].tolist()
    assert shown[0] == 0 and shown[-1] == 2398 and all(p["counts"] == [p["step"], 1] for p in data["points"])
    window = client.get("/api/histograms", params={**query, "start": 1000, "end": 1198}).json()
    assert [p["step"] for p in window["points"]] == list(range(1000, 1200, 2)) and window["total"] == 100
    assert not window["downsampled"] and window["tag_total"] == 1200
    few = client.get("/api/histograms", params={**query, "start": 1000, "max_steps": 3}).json()
    assert [p["step"] for p in few["points"]] == [1000, 1700, 2398] and few["total"] == 700
    assert few["downsampled"] and few["tag_total"] == 1200
    until = client.get("/api/histograms", params={**query, "end": 9}).json()
    assert [p["step"] for p in until["points"]] == [0, 2, 4, 6, 8] and (until["total"], until["tag_total"]) == (5, 1200)
    outside = client.get("/api/histograms", params={**query, "start": 5000}).json()
    assert outside["points"] == [] and (outside["total"], outside["tag_total"]) == (0, 1200)
    assert not outside["downsampled"]
    assert client.get("/api/histograms", params={**query, "max_steps": 1}).status_code == 422


# ---- the registry of views ----------------------------------------------------------------------------------------


def test_the_registry_lists_every_view_folder_with_its_module_and_conventions(client: TestClient) -> None:
    from deepscope.dashboard.views import HERE, all_views
    from deepscope.dashboard.views.distributions.data import HISTOGRAM_GROUPS
    from deepscope.dashboard.views.evaluation import TRUST_KINDS
    from deepscope.dashboard.views.features.data import FEATURES_PREFIX

    listed = client.get("/static/views.json").json()
    folders = sorted(p.name for p in HERE.iterdir() if (p / "__init__.py").is_file())
    assert sorted(entry["name"] for entry in listed) == folders  # a folder is a view: no list elsewhere
    assert [entry["name"] for entry in listed] == [view.name for view in all_views()]
    assert set(client.get("/api/views").json()) == set(folders)
    for entry in listed:
        module = client.get(f"/{entry['module']}")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]
        assert "export default function create(core, entry)" in module.text
        assert set(entry["kinds"]) == set(api.VIEWS[entry["name"]])
    conventions = {entry["name"]: entry["conventions"] for entry in listed}
    assert conventions["distributions"]["groups"] == [list(g) for g in HISTOGRAM_GROUPS]
    assert conventions["evaluation"]["trust_kinds"] == list(TRUST_KINDS)
    assert conventions["features"]["prefix"] == FEATURES_PREFIX
    # The page's modules copy none of them.
    pages = [client.get(f"/{entry['module']}").text for entry in listed] + [client.get("/static/core.js").text]
    assert not any('"gradient/"' in text or '"sanity_check", "method_comparison"' in text for text in pages)
    assert client.get("/static/views/nope/view.js").status_code == 404
    assert client.get("/static/views/..%2Fscalars/view.js").status_code == 404


def test_each_view_declares_the_plotly_traces_its_module_draws(client: TestClient) -> None:
    """The page loads plotly's whole build as a view opens when the view says it draws a trace the basic build lacks:
    what a module draws (its literal `type: "..."` of a plotly trace) is what its view declares."""
    import plotly.basedatatypes
    import plotly.graph_objects as go

    trace_types = {
        name.lower()
        for name in go.__all__
        if isinstance(getattr(go, name), type) and issubclass(getattr(go, name), plotly.basedatatypes.BaseTraceType)
    }
    assert {"scatter", "heatmap", "parcoords", "scatter3d"} <= trace_types
    for entry in client.get("/static/views.json").json():
        drawn = set(re.findall(r'\btype: "(\w+)"', client.get(f"/{entry['module']}").text)) & trace_types
        assert drawn <= set(entry["traces"]) <= drawn | {"scatter"}, entry["name"]
    declared = {entry["name"]: entry["traces"] for entry in client.get("/static/views.json").json()}
    assert "heatmap" in declared["evaluation"] and "parcoords" in declared["hparams"]


def test_a_warmed_scalars_answer_is_the_one_a_cold_server_sends(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    """The Scalars view's warm (run as a server starts) encodes each scalar tag of each run at the page's points per
    run; the page's request is then answered from it, with the bytes a server that never warmed sends."""
    from deepscope.dashboard import warm
    from deepscope.dashboard.views.scalars.data import points_per_run

    root, _ = store
    app = create_app(root)
    warm(app).join(timeout=60)
    cache = app.state.views["scalars"]
    runs = TestClient(app, base_url=LOCAL).get("/api/runs").json()
    tagged: dict[str, list[str]] = {}
    for run in runs:
        for tag, kind in run["tags"].items():
            if kind == "scalar" and run["status"] != "running":
                tagged.setdefault(tag, []).append(run["name"])
    assert len(cache) == sum(map(len, tagged.values())) > 0
    warmed, cold = TestClient(app, base_url=LOCAL), TestClient(create_app(root), base_url=LOCAL)
    for tag, names in tagged.items():
        params = {"tag": tag, "runs": names, "max_points": points_per_run(len(names)), "encoding": "base64"}
        answer = warmed.get("/api/scalars/batch", params=params)
        assert answer.status_code == 200 and answer.content == cold.get("/api/scalars/batch", params=params).content
    assert len(cache) == sum(map(len, tagged.values()))  # nothing computed again


def test_each_worker_of_a_multi_process_board_warms_its_own_app(
    store: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``deepscope board --workers N``: each worker makes its app with uvicorn's factory, and that app warms (its
    caches are its own); the parent process, which serves no request, warms nothing."""
    import uvicorn

    import deepscope.dashboard as board_module
    from deepscope.dashboard import ROOT_ENV, TOKEN_ENV
    from deepscope.dashboard.server import app_from_environment

    root, _ = store
    monkeypatch.setenv(ROOT_ENV, str(root))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    app = app_from_environment()
    app.state.warming.join(timeout=60)
    reference = create_app(root)
    board_module.warm(reference).join(timeout=60)
    assert len(app.state.views["scalars"]) == len(reference.state.views["scalars"]) > 0
    warmed: list[object] = []
    monkeypatch.setattr(board_module, "warm", warmed.append)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # the workers are not started here
    board_module.serve(root, workers=2)
    assert warmed == []


@pytest.mark.parametrize(
    "runs, points",
    [(0, 2000), (1, 2000), (3, 2000), (32, 1024), (100, 512), (125, 512), (126, 256), (1000, 64), (10**6, 64)],
)
def test_points_per_run_is_a_power_of_two_share_of_the_chart(runs: int, points: int) -> None:
    from deepscope.dashboard.views.scalars.data import points_per_run

    assert points_per_run(runs) == points


def test_each_app_has_its_own_view_state(store: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = store
    first, second = create_app(root), create_app(root)
    assert first.state.views["scalars"] is not second.state.views["scalars"]
    assert first.state.views["projector"] is not second.state.views["projector"]
    TestClient(first, base_url=LOCAL).get("/api/scalars/batch", params={"tag": "train/loss"})
    assert len(first.state.views["scalars"]) > 0 and len(second.state.views["scalars"]) == 0
