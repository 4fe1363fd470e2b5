"""Every function that streams a data set accepts the same forms (deepscope.batches), with the same results."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds
from deepscope.batches import batches


def _forms(x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    return {
        "pair": (x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=5),
        "list of batches": [(x[:7], y[:7]), (x[7:], y[7:])],
        "generator": ((x[i : i + 4], y[i : i + 4], "extra field") for i in range(0, len(x), 4)),
    }


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(13, 3, 8, 8, generator=generator), torch.randint(0, 3, (13,), generator=generator)


@pytest.mark.parametrize("form", ["pair", "loader", "list of batches", "generator"])
def test_every_form_gives_the_same_inputs_and_labels(data: tuple[torch.Tensor, torch.Tensor], form: str) -> None:
    x, y = data
    parts = list(batches(_forms(x, y)[form], batch_size=6))
    assert torch.equal(torch.cat([inputs for inputs, _ in parts]), x)
    assert torch.equal(torch.cat([labels for _, labels in parts]), y)


def test_a_bare_tensor_has_no_labels_and_is_split(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = data
    split = batches(x, batch_size=6)
    assert split.count == 3 and [len(i) for i, _ in split] == [6, 6, 1]
    assert all(labels is None for _, labels in split)


@pytest.mark.parametrize("form", ["pair", "loader", "generator"])
def test_streaming_functions_agree_across_forms(data: tuple[torch.Tensor, torch.Tensor], form: str) -> None:
    # ds.embed once read an (inputs, labels) pair as two batches of inputs; confidently_wrong did not.
    x, y = data
    torch.manual_seed(0)
    model = TinyCNN(classes=3).eval()
    reference = ds.embed(model, [(x, y)], "relu3", progress=False)
    features = ds.embed(model, _forms(x, y)[form], "relu3", progress=False)
    assert torch.allclose(features.features, reference.features, atol=1e-6)
    assert torch.equal(features.labels, y)
    matrix = ds.evaluate_model(model, _forms(x, y)[form], progress=False)
    assert int(matrix.counts.sum()) == len(x)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((torch.zeros(4, 3), torch.zeros(3)), "4 inputs but 3 labels"),
        (torch.zeros(0, 3), "N >= 1"),
        ("images/", "pass a tensor"),
        (42, "pass a tensor"),
    ],
)
def test_bad_data_is_refused_before_any_work(data: object, message: str) -> None:
    with pytest.raises(ds.BadInputError, match=message):
        batches(data)


def test_a_bad_batch_inside_a_loader_is_named() -> None:
    with pytest.raises(ds.BadInputError, match="2 inputs but 3 labels"):
        list(batches([(torch.zeros(2, 3), torch.zeros(3))]))
