"""Custom-scalars layouts (TensorBoard's custom scalars): logged by ``Run.add_custom_scalars`` on any store, drawn by
the board over every run, and a layout edited in the page matched chart by chart (a bad regex named in its chart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BackendStore

import deepscope as ds
from deepscope.errors import BadInputError

pytest.importorskip("fastapi", reason="fastapi is missing (pip install -e '.[board]')")
from fastapi.testclient import TestClient

from deepscope.dashboard import create_app
from deepscope.dashboard.views.scalars.data import custom_scalars

LAYOUT = {
    "Training": {
        "losses": ["Multiline", ["^loss/"]],
        "accuracy": ["Margin", ["acc", "acc/low", "acc/high"]],
    }
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layouts")
    with ds.Run(root / "a") as run:  # the run that logs the layout
        for step in range(3):
            run.log({"loss/train": 1 / (step + 1), "loss/val": 2 / (step + 1), "acc": 0.5, "acc/low": 0.4}, step=step)
            run.log({"acc/high": 0.6, "lr": 0.1}, step=step)
        run.add_custom_scalars(LAYOUT)
    with ds.Run(root / "b") as run:  # no layout: its tags are drawn in the layout's charts all the same
        run.log({"loss/train": 3.0, "loss/test": 4.0, "acc": 0.7}, step=0)
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url="http://127.0.0.1")


def test_a_run_layout_draws_the_matched_tags_of_every_run(client: TestClient) -> None:
    answer = client.get("/api/custom_scalars").json()
    assert answer["layout"] == LAYOUT  # the form Run.add_custom_scalars takes: what the page edits and downloads
    ((category,),) = [[c["category"] for c in answer["categories"]]]
    assert category == "Training"
    losses, accuracy = answer["categories"][0]["charts"]
    assert losses["runs"] == {"a": ["loss/train", "loss/val"], "b": ["loss/test", "loss/train"]}
    assert "error" not in losses
    assert accuracy["runs"] == {"a": ["acc", "acc/low", "acc/high"]}  # b lacks the band's tags


def test_an_edited_layout_is_matched_chart_by_chart(client: TestClient) -> None:
    edited = {"Mine": {"train": ["Multiline", ["train$", "^lr"]], "broken": ["Multiline", ["loss", "(unclosed"]]}}
    answer = client.get("/api/custom_scalars", params={"layout": json.dumps(edited)})
    assert answer.status_code == 200
    train, broken = answer.json()["categories"][0]["charts"]
    assert train["runs"] == {"a": ["loss/train", "lr"], "b": ["loss/train"]}
    assert broken["runs"] == {} and "'(unclosed' is not a regular expression" in broken["error"]
    assert answer.json()["layout"] == edited


@pytest.mark.parametrize(
    ("layout", "why"),
    [
        ("{not json", "layout is not JSON"),
        ('{"c": {"t": ["Margin", ["a", "b"]]}}', "names 3 tags"),
        ('{"c": {"t": ["Pie", ["a"]]}}', "not 'Multiline' or 'Margin'"),
        ("[1, 2]", "expected a non-empty dict"),
    ],
)
def test_a_layout_of_another_shape_is_a_422_saying_what_a_layout_is(client: TestClient, layout: str, why: str) -> None:
    answer = client.get("/api/custom_scalars", params={"layout": layout})
    assert answer.status_code == 422
    assert why in answer.json()["detail"]


def test_run_add_custom_scalars_checks_the_layout(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "r") as run:
        with pytest.raises(BadInputError, match="chart 'x': '\\(bad' is not a regular expression"):
            run.add_custom_scalars({"c": {"x": ["Multiline", ["(bad"]]}})
        with pytest.raises(BadInputError, match="3 tags"):
            run.add_custom_scalars({"c": {"x": ["Margin", ["a"]]}})
        with pytest.raises(BadInputError, match="non-empty dict"):
            run.add_custom_scalars([])  # type: ignore[arg-type]
        run.log({"loss": 1.0})
    assert custom_scalars(tmp_path)["layout"] == {}  # nothing was stored


def test_the_layout_is_a_record_on_every_store(store: BackendStore) -> None:
    with store.run("layout") as run:
        run.log({"loss/train": 1.0})
        run.add_custom_scalars({"old": {"c": ["Multiline", ["loss"]]}})
        run.add_custom_scalars(LAYOUT)
    with store.reader("layout") as reader:
        assert reader.tags()["custom_scalars"] == "custom_scalars"
        stored = [record.layout for record in reader.records("custom_scalars")]  # type: ignore[union-attr]
    assert stored == [{"old": {"c": ["Multiline", ["loss"]]}}, LAYOUT]
