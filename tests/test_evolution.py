"""Checkpoints kept by a ``Run`` and ``ds.features.evolution`` over them: exact round trips, and each column of the
evolution equal to what ``filters()`` / ``maximize()`` give on that checkpoint's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepscope as ds
from deepscope.errors import BadInputError, LayerNotFoundError
from deepscope.features import evolution, features_tag, filters, maximize
from deepscope.features.objectives import channel
from deepscope.store import Reader


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean((2, 3)))


def _wider() -> Tiny:
    model = Tiny()
    model.conv1 = nn.Conv2d(3, 5, 3)
    return model


def _states(run: ds.Run, model: Tiny, steps: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """Checkpoint ``model`` at each step, changing its conv weights in place in between (as training would)."""
    kept = {}
    generator = torch.Generator().manual_seed(0)
    for step in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
            model.bn.running_mean.add_(1.0)
            model.bn.num_batches_tracked.add_(3)
        run.checkpoint(model, step=step)
        kept[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return kept


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = Tiny().double()  # dtypes kept as they are
    with ds.Run(tmp_path / "run") as run:
        kept = _states(run, model, [0, 10, 25])
        assert run.checkpoint(model.state_dict()) == 26  # without a step: the next one
        with torch.no_grad():
            model.conv1.weight.zero_()  # after the call: the snapshot must not see this
    with Reader(tmp_path / "run") as reader:
        assert reader.checkpoints() == [0, 10, 25, 26]
        assert reader.tags()["checkpoint"] == "checkpoint"
        for step, state in kept.items():
            loaded = reader.checkpoint(step)
            assert list(loaded) == list(state)
            for key, tensor in state.items():
                assert loaded[key].dtype == tensor.dtype
                assert torch.equal(loaded[key], tensor), key
        assert not torch.equal(reader.checkpoint()["conv1.weight"], model.conv1.weight)
        assert torch.equal(reader.checkpoint(26)["conv1.weight"], kept[25]["conv1.weight"])
        with pytest.raises(BadInputError, match="no checkpoint at step 3"):
            reader.checkpoint(3)
        assert reader.checkpoints("other") == []


@pytest.mark.parametrize(
    ("given", "match"),
    [({"w": [1.0]}, "holds a list"), (3, "torch.nn.Module or its state_dict")],
)
def test_checkpoint_refuses_what_is_not_a_state_dict(tmp_path, given, match):
    with ds.Run(tmp_path / "run") as run, pytest.raises(BadInputError, match=match):
        run.checkpoint(given)


def test_evolution_columns_equal_filters_of_each_checkpoint(tmp_path):
    with ds.Run(tmp_path / "run") as run:
        kept = _states(run, Tiny(), [0, 5, 9])
        result = evolution(run, Tiny, "conv1", what="filters")
        assert result.steps == [0, 5, 9]
        for step, f in zip(result.steps, result.filters):
            model = Tiny()
            model.load_state_dict(kept[step])
            reference = filters(model, "conv1")
            assert torch.equal(f.weight, reference.weight)
            assert torch.equal(f.images, reference.images)
        # the weights really changed between checkpoints, so equal columns would be a bug
        assert not torch.equal(result.filters[0].weight, result.filters[1].weight)
        result.log(run)
    with Reader(tmp_path / "run") as reader:
        images = reader.records(features_tag("conv1", "filters"))
        assert [r.step for r in images] == [0, 5, 9]
        for record, f in zip(images, result.filters):
            assert np.array_equal(record.pixels, f.grid())
        noise = reader.scalars(features_tag("conv1", "filters") + "/noise")
        assert np.allclose(noise.values, [float(f.noise.mean()) for f in result.filters])


def test_evolution_maximizes_the_same_units_at_each_checkpoint(tmp_path):
    with ds.Run(tmp_path / "run") as run:
        kept = _states(run, Tiny(), [1, 4])
    result = evolution(tmp_path / "run", Tiny, "conv2", steps=[4], units=(0, 2), maximize_steps=3, size=16)
    assert result.steps == [4] and len(result.filters) == 1 and len(result.maximizations) == 1
    model = Tiny()
    model.load_state_dict(kept[4])
    reference = maximize(model, channel("conv2", [0, 2]), 3, size=16, progress=False)
    assert torch.allclose(result.maximizations[0].images, reference.images)
    assert result.maximizations[0].labels == reference.labels
    records = result.to_records()
    strip = next(r for r in records if r.tag == "features/conv2/maximize")
    assert strip.pixels.shape == (16 + 2, 2 * 17 + 1, 3)
    figure = result.figure()
    assert len(figure.axes) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "conv9"}, LayerNotFoundError, "conv1"),
        ({"steps": [7]}, BadInputError, "no checkpoint at steps"),
        ({"what": ("filters", "dream")}, BadInputError, "choose among"),
        ({"tag": "nothing"}, BadInputError, "holds no checkpoints"),
        ({"model_factory": lambda: _wider()}, BadInputError, "does not fit"),
        ({"model_factory": lambda: "a model"}, BadInputError, "not a torch.nn.Module"),
    ],
)
def test_evolution_bad_input(tmp_path, kwargs, error, match):
    with ds.Run(tmp_path / "run") as run:
        _states(run, Tiny(), [0])
    args = {"model_factory": Tiny, "layer": "conv1", "what": ("filters",)} | kwargs
    with pytest.raises(error, match=match):
        evolution(tmp_path / "run", **args)


def test_grey_first_layer_is_drawn_as_a_square_grid(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 9, 3))
    with ds.Run(tmp_path / "run") as run:
        run.checkpoint(model, step=0)
    result = evolution(tmp_path / "run", lambda: nn.Sequential(nn.Conv2d(1, 9, 3)), "0", what="filters")
    picture = next(r.pixels for r in result.to_records() if r.tag == "features/0/filters")
    assert picture.shape == (3 * 25 + 1, 3 * 25 + 1, 3)  # 3 x 3 tiles of 3 x 3 kernels enlarged 8 times, 1 px borders
    tile = picture[1 + 25 : 1 + 25 + 24 : 8, 1 + 50 : 1 + 50 + 24 : 8, 0]  # filter 5: row 1, column 2
    expected = (result.filters[0].images[5, 0].numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(tile, expected)


def test_watch_keeps_a_checkpoint_every_n_steps(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.rand(4, 3, 8, 8)
    before = {}
    with ds.Run(tmp_path / "run") as run:
        watcher = run.watch(model, every=100, checkpoint_every=2, optimizer=optimizer)
        for step in range(5):
            before[step] = {k: v.clone() for k, v in model.state_dict().items()}
            model(x).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                model.eval()(x)  # a validation pass in the same step keeps nothing more
                model.train()
        watcher.remove()
        assert not model._forward_pre_hooks  # removing the watcher removed the checkpoint hook too
        with pytest.raises(BadInputError, match="checkpoint_every"):
            run.watch(model, checkpoint_every=0)
    with Reader(tmp_path / "run") as reader:
        assert reader.checkpoints() == [0, 2, 4]
        for step in (0, 2, 4):
            loaded = reader.checkpoint(step)
            assert all(torch.equal(loaded[k], v) for k, v in before[step].items())
