"""Multifaceted visualisation on a unit planted to answer two patterns, and the two maximisation options it builds on:
a generator's latent code (the image stays in the generator's range) and the centre bias (borders change less)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepscope as ds
from deepscope.features import Facets, channel, logit, maximize, multifaceted
from deepscope.features.maximize import centre_mask

FAST = {"progress": False}


def linear_model(pixels: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, 2)).eval()


# A generator's latent code --------------------------------------------------------------------------------------------


class LinearGenerator(nn.Module):
    """``g(z) = sigmoid(A z)`` as ``[B, 1, 8, 8]``: its images span a 4-dimensional set (in logit space)."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(0.3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(1)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z @ self.A.T).view(-1, 1, 8, 8)


def off_range(images: torch.Tensor, A: torch.Tensor) -> float:
    """How far ``logit(images)`` is from the column space of ``A`` (0: the images are ``sigmoid(A z)`` for some z)."""
    y = torch.logit(images.flatten(1).double().clamp(1e-6, 1 - 1e-6)).T
    solution = torch.linalg.lstsq(A.double(), y).solution
    return float((A.double() @ solution - y).abs().max())


def test_latent_optimisation_raises_the_objective_and_stays_in_the_generators_range():
    model, g = linear_model(), LinearGenerator()
    z0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    # no decay: the objective alone, so that it must rise at every step
    result = maximize(model, logit(1), steps=60, preset="simonyan", generator=g, latent=z0, lr=0.1, decay=0, **FAST)
    assert result.latents.shape == (2, 4) and not torch.equal(result.latents, z0)
    assert (result.history[-1] > result.history[0] + 0.1).all()
    assert (result.history[1:] >= result.history[:-1] - 1e-6).all()  # no random transforms: a steady ascent
    with torch.no_grad():
        torch.testing.assert_close(result.images, g(result.latents))
        # the gradient went through g: d objective / dz = A^T (sigmoid' * w), so the objective rose along it
        assert (model(result.images)[:, 1] > model(g(z0))[:, 1]).all()
    assert off_range(result.images, g.A.detach()) < 1e-3
    pixels = maximize(model, logit(1), steps=60, preset="simonyan", size=8, channels=1, lr=0.01, **FAST)
    assert off_range(pixels.images, g.A.detach()) > 0.1, "pixel ascent leaves the range, so the check can fail"
    assert g.A.requires_grad and g.A.grad is None and g.training  # frozen during the run, restored after


def test_latent_shape_draws_a_seeded_start():
    model, g = linear_model(), LinearGenerator()
    first, again = (
        maximize(model, logit(0), steps=2, preset="simonyan", generator=g, latent_shape=(3, 4), seed=5, **FAST)
        for _ in range(2)
    )
    assert first.images.shape == (3, 1, 8, 8)
    torch.testing.assert_close(first.latents, again.latents)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"generator": lambda z: torch.sigmoid(z @ torch.ones(4, 64)), "latent_shape": (2, 4)}, "shape mismatch"),
        ({"generator": LinearGenerator(), "latent_shape": (2, 4), "size": 16}, "shape mismatch"),
        ({"generator": LinearGenerator(), "latent_shape": (2, 4), "channels": 3}, "shape mismatch"),
        ({"generator": LinearGenerator(), "latent_shape": (2, 5)}, "generator failed"),
        ({"generator": LinearGenerator()}, "latent_shape="),
        ({"generator": lambda z: 2 * LinearGenerator()(z), "latent_shape": (2, 4)}, "[0, 1]"),
        ({"generator": LinearGenerator(), "latent_shape": (2, 4), "preset": "yosinski"}, "with generator="),
        ({"generator": LinearGenerator(), "latent_shape": (2, 4), "start": torch.rand(1, 8, 8)}, "latent="),
        ({"latent": torch.zeros(2, 4)}, "pass generator="),
        ({"generator": LinearGenerator(), "latent_shape": (2, 4), "centre_bias": 2}, "centre_bias=2"),
    ],
)
def test_bad_generator_input_is_a_clear_error(options, words):
    with pytest.raises(ds.BadInputError) as caught:
        maximize(linear_model(), logit(0), steps=2, **options, **FAST)
    assert words in str(caught.value)


# Centre bias ----------------------------------------------------------------------------------------------------------


def test_centre_mask_grows_from_the_centre():
    assert centre_mask((8, 8), 0.25).nonzero().tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]
    assert centre_mask((8, 6), 1.0).all()


@pytest.mark.parametrize("preset", ["simonyan", "lucid"])
def test_centre_bias_changes_the_border_less(preset):
    model = linear_model()
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:-2, 2:-2] = False

    def change(centre_bias: float) -> tuple[float, float]:
        result = maximize(
            model, logit(1), steps=40, preset=preset, transforms=(), size=8, channels=1, start="zeros", lr=0.01,
            centre_bias=centre_bias, **FAST,
        )  # fmt: skip
        moved = (result.images - 0.5).abs()[0, 0]
        return float(moved[border].mean()), float(moved[~border].mean())

    plain_border, plain_centre = change(0.0)
    biased_border, biased_centre = change(0.75)
    assert biased_border < 0.7 * plain_border
    assert biased_border < 0.7 * biased_centre  # the centre led; without the bias they move alike
    assert plain_border > 0.8 * plain_centre


# Multifaceted visualisation -------------------------------------------------------------------------------------------


class TwoPatternUnit(nn.Module):
    """conv1 detects horizontal (channel 0) and vertical (channel 1) bars; relu2's channel 0 is their sum (the
    unit with two facets), channels 1 and 2 copy them (so relu2's activations tell the two apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 3, 1)
        self.relu2 = nn.ReLU()
        line = torch.tensor([[-1.0, -1.0, -1.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]]) / 3
        with torch.no_grad():
            self.conv1.weight.copy_(torch.stack([line.expand(3, 3, 3), line.T.expand(3, 3, 3)]))
            self.conv1.bias.zero_()
            self.conv2.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])[..., None, None])
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))


def planted_data() -> tuple[torch.Tensor, torch.Tensor]:
    """30 horizontal bars, 30 vertical bars, 30 plain noise images (kind 0, 1, 2), 3 x 12 x 12 in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    images = 0.3 + 0.05 * torch.rand(90, 3, 12, 12, generator=generator)
    strength = 0.7 + 0.3 * torch.rand(60, generator=generator)
    for i in range(30):
        images[i, :, 6, 3:9] = strength[i]
        images[30 + i, :, 3:9, 6] = strength[30 + i]
    return images, torch.arange(90) // 30


def test_facets_separate_the_two_planted_patterns():
    images, kinds = planted_data()
    facets = multifaceted(
        TwoPatternUnit(), images, "relu2", 0, facets=2, k=40, steps=20, preset="simonyan", lr=0.02, **FAST
    )
    assert isinstance(facets, Facets) and facets.points.shape == (40, 2)
    top_kinds = kinds[facets.indices]
    assert (top_kinds < 2).all() and (top_kinds == 0).sum() >= 5 and (top_kinds == 1).sum() >= 5
    member_kinds = [set(kinds[facets.members(f)].tolist()) for f in range(2)]
    assert sorted(member_kinds, key=min) == [{0}, {1}]
    for f in range(2):  # each start: the mean of the 15 members closest to the centroid (Nguyen et al.'s N)
        averaged = facets.averaged[f]
        assert len(averaged) == min(15, len(facets.members(f))) and set(averaged.tolist()) <= set(
            facets.members(f).tolist()
        )
        torch.testing.assert_close(facets.starts[f], images[averaged].mean(0))
    history = facets.maximization.history
    assert (history[-1] > history[0]).all()
    assert facets.images.shape == (2, 3, 12, 12) and facets._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda m, x: multifaceted(m, x, "relu2", 0, facets=4, k=4, **FAST), ds.BadInputError, "k=4"),
        (lambda m, x: multifaceted(m, x, "relu2", 0, features="relu_1", **FAST), ds.LayerNotFoundError, "relu1"),
        (lambda m, x: multifaceted(m, x, "relu2", 0, start="zeros", **FAST), ds.BadInputError, "start"),
        (lambda m, x: multifaceted(m, x, "relu2", 0, closest=0, **FAST), ds.BadInputError, "closest=0"),
        (lambda m, x: multifaceted(m, x, "relu2", 5, **FAST), ds.BadInputError, "3 channels"),
        (lambda m, x: multifaceted(m, x * 4 - 2, "relu2", 0, k=8, **FAST), ds.BadInputError, "[0, 1]"),
        (lambda m, x: multifaceted(m, x[:3], "relu2", 0, facets=2, k=8, **FAST), ds.BadInputError, "only 3"),
    ],
)
def test_bad_multifaceted_input_is_a_clear_error(call, error, words):
    images, _ = planted_data()
    with pytest.raises(error) as caught:
        call(TwoPatternUnit(), images)
    assert words in str(caught.value)


def test_the_channel_objective_matches_the_unit_maximised_and_closest_none_averages_every_member():
    images, _ = planted_data()
    facets = multifaceted(
        TwoPatternUnit(), images, "relu2", 0, facets=2, k=16, closest=None, steps=2, preset="simonyan", **FAST
    )
    assert facets.maximization.objective == channel("relu2", [0, 0]).name
    for f in range(2):
        torch.testing.assert_close(facets.starts[f], images[facets.members(f)].mean(0))
        assert sorted(facets.averaged[f].tolist()) == sorted(facets.members(f).tolist())


class BarClassifier(nn.Module):
    """A classifier: ``hidden`` detects the horizontal (0) and vertical (1) bars of :func:`planted_data`; class 0 of
    ``classes`` is "a bar" (both: the output neuron with two facets), classes 1 and 2 one kind each."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(3 * 12 * 12, 2)
        self.relu = nn.ReLU()
        self.classes = nn.Linear(2, 3)
        horizontal, vertical = torch.zeros(3, 12, 12), torch.zeros(3, 12, 12)
        horizontal[:, 6, 3:9] = vertical[:, 3:9, 6] = 1 / 18
        with torch.no_grad():
            self.hidden.weight.copy_(torch.stack([horizontal.flatten(), vertical.flatten()]))
            self.hidden.bias.fill_(-0.5)
            self.classes.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
            self.classes.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classes(self.relu(self.hidden(self.flatten(x))))


def test_facets_of_a_class_output_start_from_the_inputs_nearest_each_centroid():
    """Nguyen et al.'s case: a class output neuron (a Linear layer's unit), described by the penultimate layer."""
    images, kinds = planted_data()
    model = BarClassifier().eval()
    facets = multifaceted(
        model, images, "classes", 0, facets=2, k=40, closest=6, features="relu", steps=20, preset="simonyan",
        lr=0.02, **FAST,
    )  # fmt: skip
    with torch.no_grad():
        values, indices = model(images)[:, 0].topk(40)
    assert facets.indices.tolist() == indices.tolist()
    torch.testing.assert_close(facets.activations, values)
    assert sorted((set(kinds[facets.members(f)].tolist()) for f in range(2)), key=min) == [{0}, {1}]
    for f in range(2):
        rows = (facets.assignments == f).nonzero().flatten()
        # k-means' centroid is the mean of its members' t-SNE points
        torch.testing.assert_close(facets.centroids[f], facets.points[rows].mean(0), atol=1e-4, rtol=1e-4)
        by_hand = sorted(rows.tolist(), key=lambda r: float(((facets.points[r] - facets.centroids[f]) ** 2).sum()))
        nearest = facets.indices[by_hand[:6]]
        assert facets.averaged[f].tolist() == nearest.tolist()
        torch.testing.assert_close(facets.starts[f], images[nearest].mean(0))
        assert len(rows) > 6 and not torch.allclose(facets.starts[f], images[facets.members(f)].mean(0))
    assert facets.maximization.objective == channel("classes", [0, 0]).name
    history = facets.maximization.history
    assert (history[-1] > history[0]).all()
    assert facets._repr_png_().startswith(b"\x89PNG")
