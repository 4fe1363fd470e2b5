"""ds.explain_dataset on a local Ray (Ray Data map_batches over an actor pool): the Parquet file holds the same
rows in the same item order as the single-process call's, and the run gets the same sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import deepscope as ds
from deepscope.engine import RayOptions
from deepscope.store import Reader

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

N, BATCH = 64, 16
ON_RAY = RayOptions(actors=2)


def tiny_cnn() -> nn.Module:
    """conftest's TinyCNN as torch modules only: Ray's workers unpickle it without importing the tests."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """One model for both tests, which pass it with the same ON_RAY: the actor pool the first test starts serves
    the second, as it serves a user's calls."""
    return tiny_cnn()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.rand(N, 3, 16, 16, generator=generator), torch.randint(0, 5, (N,), generator=generator)


def _assert_same_rows(found: Path, expected: Path) -> None:
    a, b = pq.read_table(found), pq.read_table(expected)
    assert a.schema.equals(b.schema, check_metadata=True)
    for name in ("item", "label", "prediction", "target"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    assert a.column("item").to_pylist() == list(range(N))  # the data's order, whichever batch Ray finished first
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-5, atol=1e-6)
    scale_a, scale_b = a.column("heatmap_scale").to_numpy(), b.column("heatmap_scale").to_numpy()
    np.testing.assert_allclose(scale_a, scale_b, rtol=1e-5)
    maps_a = a.column("heatmap").combine_chunks().flatten().to_numpy().astype(np.float32)
    maps_b = b.column("heatmap").combine_chunks().flatten().to_numpy().astype(np.float32)
    np.testing.assert_allclose(maps_a, maps_b, rtol=2**-10, atol=2**-13)  # one float16 step (values in [-1, 1])


def test_a_ray_dataset_gives_the_single_process_rows(ray_module, model, data, tmp_path: Path) -> None:
    x, labels = data
    common = {"method": "gradcam", "downsample": 2, "batch_size": BATCH, "sample": 6, "progress": False}
    with ds.Run(tmp_path / "local") as run:
        local = ds.explain_dataset(model, (x, labels), path=tmp_path / "local.parquet", run=run, **common)
    # With its own ids: numbering a data set without them (the engine's zip) waits for CPUs that two actors on a
    # 2-CPU Ray hold (seen 2026-12-02; the engine's to fix).
    rows = [{"id": i, "image": x[i].numpy(), "label": int(labels[i])} for i in range(N)]
    dataset = ray.data.from_items(rows)
    with ds.Run(tmp_path / "ray") as run:
        on_ray = ds.explain_dataset(model, dataset, path=tmp_path / "ray.parquet", run=run, ray=ON_RAY, **common)
    _assert_same_rows(on_ray.path, local.path)
    assert (on_ray.items, on_ray.misclassified, on_ray.sample_items) == (N, local.misclassified, local.sample_items)
    (a,), (b,) = Reader(tmp_path / "ray").records("explanations"), Reader(tmp_path / "local").records("explanations")
    assert (a.items, a.labels, a.predictions) == (b.items, b.labels, b.predictions)
    assert a.source["items"] == N and a.source["misclassified"] == local.misclassified


def test_engine_ray_takes_in_memory_data_too(ray_module, model, data, tmp_path: Path) -> None:
    x, labels = data
    local = ds.explain_dataset(model, (x, labels), path=tmp_path / "l.parquet", batch_size=BATCH, progress=False)
    on_ray = ds.explain_dataset(
        model, (x, labels), path=tmp_path / "r.parquet", batch_size=BATCH, progress=False, engine="ray", ray=ON_RAY
    )
    _assert_same_rows(on_ray.path, local.path)
    torch.testing.assert_close(on_ray.sample.heatmap, local.sample.heatmap)  # type: ignore[union-attr]
