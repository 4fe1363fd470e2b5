"""The board's OpenAPI schema (``/openapi.json``): every API route in it with its answer's model, the real answers of a
board over a small directory of every record kind valid under those models (pydantic's and the served JSON schema),
bodies of the wrong type refused with a readable 422, the schema stable and behind the board's token and Host rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

import deepscope as ds
from deepscope.evaluate.classification import binary_report, confusion_matrix
from deepscope.track.records import Graph, Histogram, Image

pytest.importorskip("fastapi")
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from deepscope.dashboard import create_app

LOCAL = "http://127.0.0.1"
CLASSES = ["cat", "dog", "bird"]


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


def _write(root: Path) -> None:
    """Two configured runs holding every record kind the board shows (cheap ones: a 4-unit CNN, 3 inputs of 8x8)."""
    model = _tiny_cnn()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    explained = [ds.explain(model, x, method=m) for m in ("saliency", "gradcam")]
    values = np.linspace(1.0, 0.1, 50)
    values[7] = float("nan")  # travels as "NaN"
    with ds.Run(root / "demo", config={"lr": 0.1, "optim": {"name": "sgd"}, "layers": [4, 3], "seed": None}) as run:
        run.log_series("train/loss", np.arange(50), values, epochs=np.arange(50) // 10)
        run.log({"val/acc": 0.5}, step=0)
        run.log_series("features/conv/filters/noise", np.arange(2), np.array([0.3, 0.2]))
        run.log_records(
            [
                Histogram("weight/fc", s, -1.0, 1.0, np.array([1, 2, 3, 4]), layer="fc", kind="weight", mean=0.1,
                          std=1.0, zero_fraction=0.0, norm=2.0, count=10)
                for s in range(3)
            ]
        )  # fmt: skip
        run.log_records([Graph([{"name": "", "type": "Net", "parent": None, "params": 3, "shape": [1]}], None, "no")])
        run.graph(model, x, tag="traced")  # torch.fx's op-level graph
        pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
        run.log_records([Image("samples", s, pixels + s, caption=f"step {s}") for s in range(2)])
        run.log_records([Image("features/conv/filters", s, pixels) for s in range(2)])
        run.note("a **note**", step=0)
        y_true, y_pred = np.array([0, 1, 2, 2, 1]), np.array([0, 2, 2, 1, 1])
        run.log_confusion_matrix(confusion_matrix(y_true, y_pred, classes=CLASSES), step=0)
        run.log_pr_curve(binary_report(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.6, 0.4])), tag="binary")
        for step in (0, 5):  # a probe: the same inputs explained at two steps
            run.log_explanations(explained, labels=[0, 1, 2], predictions=model(x), classes=CLASSES, step=step)
        run.log_sanity_check(ds.sanity_check(model, x, methods=["saliency"]), step=0)
        run.log_faithfulness([ds.faithfulness(model, x, explained[0], steps=3)], tag="faithfulness/deletion")
        run.log_method_comparison(
            ds.compare_methods(model, x, methods=["saliency"], metrics=("deletion",), steps=3, progress=False)
        )
        features = np.random.default_rng(0).normal(size=(30, 5))
        run.log_embedding(features, tag="emb", projections={"flat": features[:, :2]})
    with ds.Run(root / "other", config={"lr": 0.01, "optim": {"name": "adam"}}) as run:
        run.log_series("train/loss", np.arange(5), np.linspace(2.0, 1.0, 5))
    writer = ds.SummaryWriter(root / "media")
    writer.add_scalar("loss/train", 1.0, 0)
    writer.add_custom_scalars({"losses": {"all": ["Multiline", ["loss/.*"]], "band": ["Margin", ["loss/train"] * 3]}})
    writer.add_audio("tone", torch.sin(torch.arange(800) / 10.0)[None], 0, sample_rate=8000)
    writer.add_video("clip", torch.rand(1, 3, 3, 8, 8), 0)
    writer.add_embedding(torch.rand(6, 4), metadata=[0, 1, 0, 1, 0, 1], label_img=torch.rand(6, 3, 4, 4), tag="thumbs")
    writer.close()
    (root / "broken").mkdir()
    (root / "broken" / "run.db").write_bytes(b"not a database" * 100)  # listed as unreadable, with why


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    found = tmp_path_factory.mktemp("openapi")
    _write(found)
    return found


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url=LOCAL)


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    return answer.json()


def _routes(routes: list[Any]) -> list[APIRoute]:
    """Every route of an app, the views' included routers' too."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:  # FastAPI's included router
            found += _routes(route.original_router.routes)
    return found


def _api_routes(client: TestClient) -> list[APIRoute]:
    return [r for r in _routes(client.app.routes) if r.path.startswith("/api/")]  # type: ignore[attr-defined]


# A layout edited in the page, one regex of which does not compile: that chart carries its "error".
EDITED = {"edited": {"bad": ["Multiline", ["loss/("]], "ok": ["Multiline", ["train/.*"]]}}
# Every JSON route's real answer on the demo directory: (method, path, query or JSON body).
DEMO = {"run": "demo"}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/runs", {}),
    ("GET", "/api/views", {}),
    ("GET", "/api/overview", {}),
    ("GET", "/static/views.json", {}),
    ("GET", "/api/scalars", {**DEMO, "tag": "train/loss"}),
    ("GET", "/api/scalars", {**DEMO, "tag": "train/loss", "encoding": "base64"}),
    ("GET", "/api/scalars/batch", {"tag": "train/loss"}),
    ("GET", "/api/scalars/batch", {"tag": "train/loss", "runs": ["other", "demo"], "encoding": "base64"}),
    ("GET", "/api/custom_scalars", {}),
    ("GET", "/api/custom_scalars", {"layout": json.dumps(EDITED)}),
    ("GET", "/api/hparams", {}),
    ("GET", "/api/hparams", {"metrics": ["train/loss", "val/acc"]}),
    ("GET", "/api/hparams/diff", {"a": "demo", "b": "other"}),
    ("GET", "/api/histograms", {**DEMO, "tag": "weight/fc"}),
    ("GET", "/api/graph", DEMO),
    ("GET", "/api/graph", {**DEMO, "tag": "traced"}),
    ("GET", "/api/images", {**DEMO, "tag": "samples"}),
    ("GET", "/api/images", {"run": "media", "tag": "tone"}),
    ("GET", "/api/images", {"run": "media", "tag": "clip"}),
    ("GET", "/api/features", DEMO),
    ("GET", "/api/explanations", {**DEMO, "tag": "explanations"}),
    ("GET", "/api/probe", {**DEMO, "tag": "explanations", "index": 1}),
    ("GET", "/api/confusion_matrix", {**DEMO, "tag": "confusion_matrix"}),
    ("GET", "/api/pr_curve", {**DEMO, "tag": "binary"}),
    ("GET", "/api/sanity_check", {**DEMO, "tag": "sanity_check"}),
    ("GET", "/api/faithfulness", {**DEMO, "tag": "faithfulness/deletion"}),
    ("GET", "/api/method_comparison", {**DEMO, "tag": "method_comparison"}),
    ("GET", "/api/text", {**DEMO, "tag": "notes"}),
    ("GET", "/api/embeddings", DEMO),
    ("GET", "/api/embeddings", {"run": "media"}),
    ("GET", "/api/embedding/labels", {"run": "media", "tag": "thumbs"}),
    ("GET", "/api/projection/status", {**DEMO, "tag": "emb", "name": "pca-2d"}),
    ("GET", "/api/projection", {**DEMO, "tag": "emb", "name": "flat"}),
    ("POST", "/api/projection", {**DEMO, "tag": "emb", "name": "pca-2d"}),
    ("GET", "/api/neighbors", {**DEMO, "tag": "emb", "index": 3, "k": 4}),
]
# The Explore view's answers need its worker (a model in a second process): tests/test_board_explore.py checks them
# against their models where it starts one.
EXPLORE = {"/api/explore", "/api/explore/jobs", "/api/explore/uploads", "/api/explore/items", "/api/explore/jobs/{job}"}


def _route(client: TestClient, method: str, path: str) -> APIRoute:
    return next(r for r in _routes(client.app.routes) if r.path == path and method in r.methods)  # type: ignore[attr-defined]


def test_every_api_route_is_in_the_schema_with_its_answer(client: TestClient, spec: dict[str, Any]) -> None:
    routes = _api_routes(client)
    assert len(routes) >= 30
    for route in routes:
        for method in route.methods:
            operation = spec["paths"][route.path][method.lower()]
            content = operation["responses"]["200"]["content"]
            assert content and all(each["schema"] for each in content.values()), (
                f"{method} {route.path} has no answer schema: name its model in the decorator (response_model=, "
                "from views/<name>/models.py), or its content types (responses=) for bytes"
            )
            if route.response_model is not None:  # a JSON answer: its model's schema, by name
                assert list(content) == ["application/json"]
                assert content["application/json"]["schema"], route.path
            else:  # bytes: a picture, a file, a stream
                assert "application/json" not in content, route.path
            assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    # every JSON route's real answer is checked: here, or (the Explore view's) where its worker runs
    json_routes = {r.path for r in routes if r.response_model is not None}
    checked = {path for _, path, _ in CASES if path.startswith("/api/")} | EXPLORE
    assert json_routes == checked, f"add a case to CASES for {sorted(json_routes - checked)}"
    # a JSON body's model is in the schema too, also where the route reads its body itself
    for path in ("/api/projection", "/api/explore/jobs", "/api/explore/uploads"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body.get("$ref") or body["additionalProperties"] is False, path


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]})


@pytest.mark.parametrize(("method", "path", "params"), CASES, ids=[f"{m} {p} {sorted(q.items())}" for m, p, q in CASES])
def test_real_answers_validate_against_the_schema(
    client: TestClient, spec: dict[str, Any], method: str, path: str, params: dict[str, Any]
) -> None:
    answer = client.get(path, params=params) if method == "GET" else client.post(path, json=params)
    assert answer.status_code == 200, answer.text
    # the route's pydantic model, strictly: no key it does not name, no value of another type
    model = _route(client, method, path).response_model
    TypeAdapter(model).validate_json(answer.content, strict=True)
    # and the schema the board serves, as a client would check it
    schema = spec["paths"][path][method.lower()]["responses"]["200"]["content"]["application/json"]["schema"]
    _validator(spec, schema).validate(answer.json())


def test_an_unreadable_run_is_listed_as_its_model_says(client: TestClient) -> None:
    (broken,) = [run for run in client.get("/api/runs").json() if run["name"] == "broken"]
    assert broken["status"] == "unreadable" and broken["error"] and broken["created_at"] is None


def test_a_drifting_answer_fails_its_model(client: TestClient, spec: dict[str, Any]) -> None:
    answer = client.get("/api/scalars", params={**DEMO, "tag": "train/loss"}).json()
    assert answer["values"][7] == "NaN"  # a non-finite value is a name: part of the model
    schema = spec["paths"]["/api/scalars"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    model = TypeAdapter(_route(client, "GET", "/api/scalars").response_model)
    for drifted in ({**answer, "extra": 1}, {**answer, "total": "50"}, {k: v for k, v in answer.items() if k != "run"}):
        with pytest.raises(ValueError):
            model.validate_python(drifted, strict=True)
        assert not _validator(spec, schema).is_valid(drifted)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/projection", {**DEMO, "tag": 3, "name": "pca-2d"}, "tag"),
        ("/api/projection", {**DEMO, "tag": "emb", "name": "pca-2d", "step": "0"}, "step"),
        ("/api/explore/jobs", {**DEMO, "item": "three", "method": "saliency"}, "item"),
        ("/api/explore/jobs", {**DEMO, "item": 0, "methods": "saliency"}, "methods"),
        ("/api/explore/uploads", {**DEMO, "image": 12}, "image"),
    ],
)
def test_bodies_of_the_wrong_type_are_a_readable_422(client: TestClient, path: str, body: dict, field: str) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and f"{field}: Input should be a valid " in detail, detail  # pydantic's words


def test_a_query_of_the_wrong_type_is_a_readable_422(client: TestClient) -> None:
    answer = client.get("/api/scalars", params={**DEMO, "tag": "train/loss", "max_points": "many"})
    assert answer.status_code == 422
    said = "query.max_points: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    assert answer.json() == {"detail": said}


def test_the_schema_is_stable_and_names_no_server_path(root: Path, tmp_path: Path, spec: dict[str, Any]) -> None:
    other = TestClient(create_app(tmp_path), base_url=LOCAL).get("/openapi.json")
    assert other.json() == spec  # nothing of what is served in it
    text = other.text
    for path in (str(root), str(tmp_path), str(Path.home()), str(Path(ds.__file__).parent)):
        assert path not in text
    assert spec["info"]["title"] == "deepscope board" and spec["openapi"].startswith("3.")


def test_the_schema_keeps_the_boards_token_host_and_headers(root: Path, client: TestClient) -> None:
    guarded = TestClient(create_app(root, token="s3cret"), base_url="http://board.example:6006")
    assert guarded.get("/openapi.json").status_code == 401
    assert guarded.get("/openapi.json", params={"token": "s3cret"}).status_code == 200
    assert guarded.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/openapi.json", headers={"Host": "evil.example"}).status_code == 403
    answer = client.get("/openapi.json")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    for page in ("/docs", "/redoc"):  # no docs page (Swagger UI would come from a CDN)
        assert client.get(page).status_code == 404
