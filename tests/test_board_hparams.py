"""The HParams view's answers: configs from ``Run(config=)`` and ``SummaryWriter.add_hparams`` flattened, metric
summaries against numpy, bad metric names, and what its per-app state keeps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import deepscope as ds

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope.dashboard import api, create_app
from deepscope.dashboard.views.hparams.data import HParams, config_diff, flatten, hparams
from deepscope.track.tensorboard import SummaryWriter

LOCAL = "http://127.0.0.1"
VALUES = np.array([3.0, 1.0, math.nan, 2.0, 0.5, 0.75])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hparams")
    with ds.Run(root / "a", config={"lr": 0.1, "optim": {"name": "sgd", "betas": [0.9, 0.99]}, "seed": 1}) as run:
        for step, value in enumerate(VALUES):
            run.log({"train/loss": float(value), "grad_norm/10": 1.0, "grad_norm/2": 2.0}, step=step)
    with SummaryWriter(str(root / "b")) as writer:  # TensorBoard's way: hparams plus their metrics at a step
        writer.add_hparams({"lr": 0.01, "optim": "adam"}, {"hparam/accuracy": 0.9}, global_step=3)
    with ds.Run(root / "no-config") as run:
        run.log({"train/loss": 1.0}, step=0)
    return root


def test_flatten_names_nested_values_with_dots() -> None:
    assert flatten({"optim": {"lr": 0.1, "betas": (0.9, 0.99)}, "x": None, "y": math.inf, "z": {}}) == {
        "optim.lr": 0.1,
        "optim.betas": "[0.9, 0.99]",
        "x": None,
        "y": "Infinity",
        "z": "{}",
    }


def test_hparams_rows_configs_and_metric_summaries(root: Path) -> None:
    answer = hparams(root, ["train/loss", "hparam/accuracy"])
    assert [run["name"] for run in answer["runs"]] == ["a", "b"]  # "no-config" is not a row
    assert answer["hparams"] == ["lr", "optim", "optim.betas", "optim.name", "seed"]
    assert answer["metrics"] == ["grad_norm/2", "grad_norm/10", "hparam/accuracy", "train/loss"]  # 2 before 10
    a, b = answer["runs"]
    assert a["config"] == {"lr": 0.1, "optim.name": "sgd", "optim.betas": "[0.9, 0.99]", "seed": 1}
    assert b["config"] == {"lr": 0.01, "optim": "adam"}
    loss = a["metrics"]["train/loss"]
    finite = VALUES[np.isfinite(VALUES)]
    assert loss == {"last": 0.75, "step": 5, "min": finite.min(), "max": finite.max(), "count": len(VALUES)}
    assert a["metrics"]["hparam/accuracy"] is None  # a doesn't have it
    assert b["metrics"]["hparam/accuracy"] == {"last": 0.9, "step": 3, "min": 0.9, "max": 0.9, "count": 1}
    assert b["metrics"]["train/loss"] is None


def test_default_metrics_look_like_metrics(root: Path) -> None:
    assert hparams(root)["chosen"] == ["hparam/accuracy", "train/loss"]


def test_an_unknown_metric_is_a_clear_422_naming_close_ones(root: Path) -> None:
    client = TestClient(create_app(root), base_url=LOCAL)
    answer = client.get("/api/hparams", params={"metrics": ["train/los"]})
    assert answer.status_code == 422
    assert "'train/los'" in answer.json()["detail"] and "'train/loss'" in answer.json()["detail"]
    good = client.get("/api/hparams", params={"metrics": ["train/loss"]}).json()
    assert good["chosen"] == ["train/loss"] and len(good["runs"]) == 2


def test_config_diff_names_what_differs(root: Path) -> None:
    diff = config_diff(root, "a", "b")
    assert diff["same"] == 0
    assert diff["rows"] == [
        {"name": "lr", "values": [0.1, 0.01], "only": None},
        {"name": "optim", "values": [None, "adam"], "only": 1},
        {"name": "optim.betas", "values": ["[0.9, 0.99]", None], "only": 0},
        {"name": "optim.name", "values": ["sgd", None], "only": 0},
        {"name": "seed", "values": [1, None], "only": 0},
    ]
    assert config_diff(root, "a", "a") == {"runs": ["a", "a"], "rows": [], "same": 4}
    client = TestClient(create_app(root), base_url=LOCAL)
    missing = client.get("/api/hparams/diff", params={"a": "a", "b": "bb"})
    assert missing.status_code == 404 and "'b'" in missing.json()["detail"]  # the close name


def test_the_tab_shows_only_when_a_run_has_a_config(root: Path, tmp_path: Path) -> None:
    assert api.views(root)["hparams"] is True
    with ds.Run(tmp_path / "bare") as run:
        run.log({"x": 1.0})
    assert api.views(tmp_path)["hparams"] is False


def test_finished_runs_are_read_once_a_running_one_every_time(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "done", config={"lr": 1}) as run:
        run.log({"loss": 1.0})
    state = HParams()
    first = hparams(tmp_path, ["loss"], state)
    assert len(state.runs) == 1  # the finished run, under its change token
    assert hparams(tmp_path, ["loss"], state) == first
    live = ds.Run(tmp_path / "live", config={"lr": 2}, flush_interval=0.05)
    try:
        live.log({"loss": 5.0}, step=0)
        live.flush()
        assert [r["name"] for r in hparams(tmp_path, ["loss"], state)["runs"]] == ["done", "live"]
        live.config["momentum"] = 0.5
        live.log({"loss": 4.0}, step=1)
        live.flush()
        row = hparams(tmp_path, ["loss"], state)["runs"][1]
        assert row["config"] == {"lr": 2, "momentum": 0.5} and row["metrics"]["loss"]["last"] == 4.0
        assert len(state.runs) == 1  # the live one is not kept
    finally:
        live.close()
