"""Big embeddings in Parquet beside the run: the record reads back as logged, the board's projector answers on a
Parquet embedding exactly what it answers on the same embedding as ``.npz``, and t-SNE of more points than
``NONLINEAR_SAMPLE`` runs on a stated, seeded sample while PCA projects every point."""

from __future__ import annotations

import base64
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import deepscope as ds
from deepscope.store import Reader
from deepscope.store.records import embedding as embedding_codec
from deepscope.track.records import Embedding

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from deepscope.dashboard import create_app
from deepscope.dashboard.views.projector import data as projector

N, D = 240, 12
RNG = np.random.default_rng(0)
TRUTH = np.arange(N) % 3
FEATURES = (8 * RNG.normal(size=(3, D))[TRUTH] + RNG.normal(size=(N, D))).astype(np.float32)
LABELS = [[f"c{t}", f"c{(t + (i % 7 == 0)) % 3}"] for i, t in enumerate(TRUTH)]
THUMBNAILS = RNG.integers(0, 256, (N, 5, 4, 3), dtype=np.uint8)
STORED = RNG.normal(size=(N, 3)).astype(np.float32)


def _record(tag: str, parquet: bool) -> Embedding:
    return Embedding(
        tag,
        0,
        FEATURES,
        labels=LABELS,
        label_header=["label", "prediction"],
        thumbnails=THUMBNAILS,
        projections={"mine": STORED},
        parquet=parquet,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    with ds.Run(root / "r") as run:
        run.log_records([_record("npz", False), _record("pq", True)])
        run.log_embedding(FEATURES[:30], tag="plain", parquet=True)  # no labels, no thumbnails
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url="http://127.0.0.1")


def _array(packed: dict[str, str], dim: int | None = None) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(packed["base64"]), packed["dtype"])
    return values.reshape(-1, dim) if dim else values


def test_a_parquet_embedding_reads_back_as_logged(root: Path) -> None:
    reader = Reader(root / "r")
    (_, file, meta) = reader.files("pq")[0]
    assert file.endswith(".parquet") and meta["labels"] is None  # the labels are in the file, not the database
    assert pq.read_metadata(root / "r" / file).num_rows == N
    got, npz = reader.records("pq")[0], reader.records("npz")[0]
    for record in (got, npz):
        np.testing.assert_array_equal(record.features, FEATURES)
        np.testing.assert_array_equal(record.thumbnails, THUMBNAILS)
        np.testing.assert_array_equal(record.projections["mine"], STORED)
        assert record.labels == LABELS and record.label_header == ["label", "prediction"]
    plain = reader.records("plain")[0]
    assert plain.labels is None and plain.thumbnails is None and plain.features.shape == (30, D)


def test_big_embeddings_go_to_parquet_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding_codec, "PARQUET_ROWS", 20)
    with ds.Run(tmp_path / "r") as run:
        run.log_embedding(FEATURES[:20], tag="big")
        run.log_embedding(FEATURES[:19], tag="small")
        run.log_embedding(FEATURES[:20], tag="asked", parquet=False)
    reader = Reader(tmp_path / "r")
    suffixes = {tag: Path(reader.files(tag)[0][1]).suffix for tag in ("big", "small", "asked")}
    assert suffixes == {"big": ".parquet", "small": ".npz", "asked": ".npz"}


def test_without_pyarrow_parquet_names_the_extra_and_big_ones_stay_npz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setattr(embedding_codec, "PARQUET_ROWS", 20)
    with ds.Run(tmp_path / "r") as run:
        with pytest.raises(ImportError, match=r"deepscope\[parquet\]"):
            run.log_embedding(FEATURES[:5], tag="asked", parquet=True)
        run.log_embedding(FEATURES[:20], tag="big")
    assert Reader(tmp_path / "r").files("big")[0][1].endswith(".npz")


def _same(client: TestClient, route: str, **params: Any) -> dict[str, Any]:
    """The answers of ``route`` for the Parquet and the ``.npz`` embedding, which must agree but for the tag."""
    # A projection starts work, so it is asked by a POST with a JSON body (the board's rule); the rest are GETs.
    ask = (
        (lambda p: client.post(route, json=p))
        if route == "/api/projection"
        else (lambda p: client.get(route, params=p))
    )
    answers = [ask({"run": "r", "tag": tag, **params}) for tag in ("pq", "npz")]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    if answers[0].headers["content-type"].startswith("image/"):
        assert answers[0].content == answers[1].content
        return {}
    parquet_answer, npz_answer = (a.json() for a in answers)
    assert {**parquet_answer, "tag": "npz", "seconds": 0} == {**npz_answer, "seconds": 0}
    return parquet_answer  # type: ignore[no-any-return]


def test_the_projector_answers_on_parquet_as_on_npz(client: TestClient) -> None:
    listed = {e["tag"]: e for e in client.get("/api/embeddings", params={"run": "r"}).json()["embeddings"]}
    assert {**listed["pq"], "tag": "npz"} == listed["npz"]
    assert (listed["pq"]["n"], listed["pq"]["thumbnails"], listed["plain"]["thumbnails"]) == (N, True, False)
    labels = _same(client, "/api/embedding/labels")
    columns = {c["name"]: np.asarray(c["values"])[_array(c["codes"])].tolist() for c in labels["columns"]}
    assert columns["label"] == [row[0] for row in LABELS] and "correct" in columns
    np.testing.assert_array_equal(_array(_same(client, "/api/projection", name="mine")["points"], 3), STORED)
    pca = _same(client, "/api/projection", name="pca-2d")
    assert pca["sample"] is None and _array(pca["points"], 2).shape == (N, 2)
    _same(client, "/api/neighbors", index=5, k=4)
    for index in (0, N - 1):
        _same(client, "/api/thumbnail", index=index)
    assert client.get("/api/thumbnail", params={"run": "r", "tag": "plain", "index": 0}).status_code == 404
    assert client.get("/api/embedding/labels", params={"run": "r", "tag": "plain"}).json()["columns"] == []


def test_a_thumbnail_is_read_from_its_row_group(root: Path, client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(embedding_codec, "ROW_GROUP", 50)  # several row groups: the point's is found
    with ds.Run(root / "groups") as run:
        run.log_records([_record("pq", True)])
    (_, file, _) = Reader(root / "groups").files("pq")[0]
    assert pq.ParquetFile(root / "groups" / file).num_row_groups == 5
    from PIL import Image

    for index in (0, 49, 50, 137, N - 1):
        answer = client.get("/api/thumbnail", params={"run": "groups", "tag": "pq", "index": index})
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), THUMBNAILS[index])


def test_tsne_of_a_big_embedding_runs_on_a_stated_sample(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(projector, "NONLINEAR_SAMPLE", 120)
    params = {"run": "r", "tag": "pq", "name": "tsne-2d"}
    answer = client.post("/api/projection", json=params).json()
    deadline = time.monotonic() + 120
    while answer["status"] in ("queued", "running") and time.monotonic() < deadline:
        assert answer["sample"] == {"size": 120, "indices": None}  # stated while it runs
        time.sleep(0.1)
        answer = client.get("/api/projection", params=params).json()
    assert answer["status"] == "done", answer["error"]
    indices = _array(answer["sample"]["indices"])
    assert answer["sample"]["size"] == 120 and answer["n"] == N
    assert len(np.unique(indices)) == 120 and np.all(np.diff(indices) > 0) and indices[0] >= 0 and indices[-1] < N
    points = _array(answer["points"], 2)
    assert points.shape == (120, 2) and np.isfinite(points).all()
    expected = np.sort(np.random.default_rng(0).choice(N, 120, replace=False))  # seeded: every viewer sees these
    np.testing.assert_array_equal(indices, expected)
    import torch

    from deepscope.embed import knn_accuracy

    assert knn_accuracy(torch.from_numpy(points.copy()), torch.from_numpy(TRUTH[indices])) > 0.9
    pca = client.get("/api/projection", params={**params, "name": "pca-2d"}).json()
    assert pca["sample"] is None and _array(pca["points"], 2).shape == (N, 2)  # PCA: every point
