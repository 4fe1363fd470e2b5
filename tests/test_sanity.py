"""Sanity checks (Adebayo et al. 2018): randomisation separates model-dependent maps from an edge detector."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN, squares, trained_on_squares
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

import deepscope as ds
from deepscope.evaluate.sanity import hog, hog_cell_size, hog_similarity, randomisable_layers, spearman, ssim

# One worker runs this module and the other user of conftest.trained_on_squares, which trains once for both.
pytestmark = pytest.mark.xdist_group("squares")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    model, generator = trained_on_squares()
    images, labels = squares(200, generator)
    with torch.no_grad():
        accuracy = (model(images).argmax(dim=1) == labels).float().mean()
    assert accuracy > 0.9, f"the test model did not learn the task (accuracy {accuracy:.2f})"
    return model, images[:8]


def edges(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """An 'explanation' that ignores the model: the Sobel gradient magnitude of the input."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gray = inputs.mean(dim=1, keepdim=True)
    gx = F.conv2d(gray, sobel.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(gray, sobel.t().reshape(1, 1, 3, 3), padding=1)
    return (gx.square() + gy.square()).sqrt()[:, 0]


def test_cascading_tells_model_dependent_maps_from_an_edge_detector(trained: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    check = ds.sanity_check(model, images, methods=("saliency", "gradcam", edges))

    assert check.steps == ["original", "fc", "conv3", "conv2", "conv1"]
    assert check.maps["saliency"].shape == (5, 8, 16, 16)
    for method in ("saliency", "gradcam", "edges"):
        for metric in ("spearman", "spearman_abs", "ssim", "hog"):
            assert check.scores[method][metric].shape == (5, 8)
            torch.testing.assert_close(check.scores[method][metric][0], torch.ones(8))
    # The check's verdict: maps that depend on the model fall apart, the edge detector does not move.
    for method in ("saliency", "gradcam"):
        assert check.scores[method]["spearman"][-1].mean() < 0.5, method
    for metric in ("spearman", "spearman_abs", "ssim", "hog"):
        assert check.scores["edges"][metric].min() > 0.999
    # The user's model and random state are as they were.
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_each_step_randomises_the_layers_it_names(trained: tuple[nn.Module, torch.Tensor], mode: str) -> None:
    model, images = trained
    seen: list[dict[str, list[torch.Tensor]]] = []

    def record(network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        seen.append({n: [p.detach().clone() for p in m.parameters(recurse=False)] for n, m in network.named_modules()})
        return edges(network, inputs)

    check = ds.sanity_check(model, images[:2], methods=[record], mode=mode, seed=3)
    original = {n: list(m.parameters(recurse=False)) for n, m in model.named_modules()}
    assert len(seen) == len(check.steps)
    for k, params in enumerate(seen):
        changed = {n for n, ps in params.items() if any(not torch.equal(p, q) for p, q in zip(ps, original[n]))}
        expected = set(check.steps[1 : k + 1]) if mode == "cascading" else set(check.steps[k : k + 1]) - {"original"}
        assert changed == expected, (k, changed)


def test_same_seed_same_maps_and_modes_agree_on_the_first_step(trained: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained
    a = ds.sanity_check(model, images[:3], methods=["saliency"], seed=1)
    b = ds.sanity_check(model, images[:3], methods=["saliency"], mode="independent", seed=1)
    c = ds.sanity_check(model, images[:3], methods=["saliency"], seed=2)
    # Step 1 re-initialises only the top layer in both modes, with the same seed.
    torch.testing.assert_close(a.maps["saliency"][:2], b.maps["saliency"][:2])
    assert not torch.equal(a.maps["saliency"][1], c.maps["saliency"][1])


def test_layer_order_is_reverse_named_modules() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert randomisable_layers(model) == ["4", "1", "0"]


def test_ssim_matches_skimage() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 17, generator=generator)
    b = 0.6 * a + 0.4 * torch.rand(3, 20, 17, generator=generator)
    a[2] = F.avg_pool2d(a[2][None, None], 3, 1, 1)[0, 0] * 5 - 1  # any range: maps are min-max scaled first
    ours = ssim(a, b)
    for i in range(3):
        x, y = (t[i].double().numpy() for t in (a, b))
        x, y = ((v - v.min()) / (v.max() - v.min()) for v in (x, y))
        reference = structural_similarity(
            x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, win_size=7, use_sample_covariance=False
        )
        assert abs(float(ours[i]) - reference) < 1e-3
    assert abs(float(ssim(a, b)[0]) - float(ssim(b, a)[0])) < 1e-6


def test_spearman_matches_scipy_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 6, 6), generator=generator).float()  # many ties, as in ReLU'd maps
    b = a + torch.randint(0, 3, (4, 6, 6), generator=generator).float()
    ours = spearman(a, b)
    for i in range(4):
        reference = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(float(ours[i]) - reference) < 1e-6
    assert float(spearman(a[:1], torch.zeros(1, 6, 6))[0]) == 0.0  # a constant map has no ranking


def test_figures(trained: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained
    check = ds.sanity_check(model, images[:2], methods=("saliency", edges), mode="independent")
    assert check._repr_png_().startswith(b"\x89PNG")
    assert len(check.figure(metrics=["ssim"]).axes) == 1
    grid = check.grid(index=1)
    assert len(grid.axes) == 2 * (1 + len(check.steps))
    with pytest.raises(ds.BadInputError):
        check.grid(index=5)


class Counting(TinyCNN):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        return super().forward(x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"methods": ["saliency", "no_such_method"]},
        {"methods": []},
        {"methods": [42]},
        {"methods": ["saliency", "saliency"]},
        {"mode": "top_down"},
        {"seed": 1.5},
        {"options": {"gradcam": {"steps": 3}}},
        {"options": {"saliency": {"no_such_option": 1}}},
        {"inputs": torch.rand(2, 3, 5, 5)},
        {"inputs": torch.rand(2, 12)},
    ],
)
def test_bad_input_before_work(kwargs: dict) -> None:
    model = Counting(classes=4).eval()
    inputs = kwargs.pop("inputs", torch.rand(2, 3, 16, 16))
    Counting.calls = 0
    with pytest.raises(ds.BadInputError):
        ds.sanity_check(model, inputs, **kwargs)
    assert Counting.calls == 0


def test_layer_without_reset_parameters_is_bad_input() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    model = nn.Sequential(nn.Conv2d(3, 2, 3), Scale(), nn.Flatten(), nn.Linear(2 * 14 * 14, 2)).eval()
    with pytest.raises(ds.BadInputError, match="reset_parameters"):
        ds.sanity_check(model, torch.rand(1, 3, 16, 16), methods=["saliency"])
    np.testing.assert_equal(model[1].weight.detach().numpy(), [1.0])


@pytest.mark.parametrize("shape", [(16, 16), (28, 28), (20, 17), (7, 9)])
def test_hog_matches_skimage(shape: tuple[int, int]) -> None:
    from skimage.feature import hog as skimage_hog

    generator = torch.Generator().manual_seed(0)
    maps = F.avg_pool2d(torch.rand(3, 1, *shape, generator=generator), 3, 1, 1)[:, 0]
    maps[1] = torch.round(maps[1] * 4) / 4  # flat areas and exact-zero gradients, as in ReLU'd maps
    ours = hog(maps)
    cell = hog_cell_size(*shape)
    for i in range(3):
        reference = skimage_hog(
            maps[i].double().numpy(),
            orientations=9,
            pixels_per_cell=(cell, cell),
            cells_per_block=(2, 2),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        np.testing.assert_allclose(ours[i].numpy(), reference, atol=1e-7)
    other = torch.rand(3, *shape, generator=generator)
    reference = [
        np.corrcoef(skimage_hog(_scaled(a), 9, (cell, cell), (2, 2)), skimage_hog(_scaled(b), 9, (cell, cell), (2, 2)))
        for a, b in zip(maps, other)
    ]
    np.testing.assert_allclose(hog_similarity(maps, other).numpy(), [r[0, 1] for r in reference], atol=1e-6)
    torch.testing.assert_close(hog_similarity(maps, 3 * maps + 1), torch.ones(3))  # scale and offset: same shapes


def _scaled(a: torch.Tensor) -> np.ndarray:
    a = a.double().numpy()
    return (a - a.min()) / (a.max() - a.min())


# Data randomisation ------------------------------------------------------------------------------------------


def _fit(model: nn.Module, data: torch.Tensor, labels: torch.Tensor) -> None:
    """The user's training function: 150 Adam steps on mini-batches of 64."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        batch = torch.arange(step * 64, (step + 1) * 64) % len(data)
        loss = F.cross_entropy(model(data[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_data_randomization_permuted_labels_change_the_maps() -> None:
    generator = torch.Generator().manual_seed(1)
    data, labels = squares(384, generator)
    torch.manual_seed(5)  # the checked model starts from other weights than the check's retrained ones
    model = TinyCNN(classes=3)
    _fit(model, data, labels)
    model.eval()
    inputs = squares(8, generator)[0]
    rng = torch.get_rng_state()
    check = ds.evaluate.data_randomization_check(
        model, lambda: TinyCNN(classes=3), _fit, data, labels, inputs, methods=("saliency", "gradcam", edges)
    )
    assert check.mode == "data" and check.steps == ["original", "true labels (retrained)", "permuted labels"]
    assert check.maps["gradcam"].shape == (3, 8, 16, 16)
    assert torch.equal(torch.get_rng_state(), rng)
    for method in ("saliency", "gradcam"):
        for metric in ("spearman", "ssim"):
            retrained, permuted = check.scores[method][metric][1:].mean(dim=1)
            assert permuted < retrained - 0.2, (method, metric, retrained, permuted)
    assert check.scores["edges"]["spearman"].min() > 0.999  # the input's edges ignore the labels
    assert len(check.figure(metrics=["spearman", "hog"]).axes) == 2


@pytest.mark.parametrize(
    ("labels", "factory"),
    [(torch.zeros(4, dtype=torch.long), TinyCNN), (torch.tensor([0, 1, 2]), TinyCNN), (torch.rand(4), TinyCNN)],
)
def test_data_randomization_bad_input(labels: torch.Tensor, factory: object) -> None:
    model = TinyCNN(classes=3).eval()
    with pytest.raises(ds.BadInputError):
        ds.evaluate.data_randomization_check(
            model, factory, _fit, torch.rand(4, 3, 16, 16), labels, torch.rand(2, 3, 16, 16)
        )


def test_a_watched_model_is_checked_on_a_copy_without_the_watch_hooks(tmp_path) -> None:
    # The copies are randomised: hooks copied along would log their activations into the user's run (and
    # the run's open files cannot be deep-copied at all: this used to raise "cannot pickle TextIOWrapper").
    torch.manual_seed(0)
    model = TinyCNN()
    with ds.Run(tmp_path / "run") as run:
        watcher = run.watch(model, every=1)
        model.train()
        model(torch.randn(2, 3, 16, 16)).sum().backward()
        hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        model.eval()
        check = ds.sanity_check(model, torch.randn(2, 3, 16, 16), methods=["saliency"])
        hooks_after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        watcher.remove()
    assert hooks_before > 0 and hooks_after == hooks_before
    assert check.scores["saliency"]["spearman"].shape[0] == len(check.steps)


def _check_with(scores: list[list[float]], mode: str = "cascading") -> ds.evaluate.SanityCheck:
    """A SanityCheck of one method, 'gbp', whose Spearman scores per step (rows) and input (columns) are given."""
    values = torch.tensor(scores)
    steps = ["original", "fc", "conv2", "conv1"][: len(scores)]
    return ds.evaluate.SanityCheck(
        mode=mode,
        methods=["gbp"],
        steps=steps,
        scores={"gbp": {metric: values for metric in ("spearman", "spearman_abs", "ssim", "hog")}},
        maps={"gbp": torch.zeros(len(scores), 2, 8, 8)},
        inputs=torch.zeros(2, 1, 8, 8),
    )


def test_mean_over_steps_averages_every_randomised_step() -> None:
    check = _check_with([[1.0, 1.0], [0.9, 0.7], [0.8, 0.5], [0.0, 0.2]])
    torch.testing.assert_close(check.mean_over_steps("gbp"), torch.tensor([1.7 / 3, 1.4 / 3]))
    with pytest.raises(ds.BadInputError, match="not among the methods"):
        check.mean_over_steps("saliency")
    with pytest.raises(ds.BadInputError, match="metric"):
        check.mean_over_steps("gbp", "pearson")
    with pytest.raises(ds.BadInputError, match="true and on random labels"):
        _check_with([[1.0, 1.0], [0.9, 0.9], [0.1, 0.1]], mode="data").mean_over_steps("gbp")


def test_demo_sanity_line_says_what_its_numbers_say() -> None:
    from deepscope.demo.fashion_views import SURVIVES, sanity_line

    survivor = sanity_line(_check_with([[1.0, 1.0], [0.9, 0.8], [0.6, 0.6], [0.0, 0.0]]), "gbp")
    assert survivor == "gbp              0.85 after fc, mean 0.48 over the cascade, 0.00 with all layers random: " + (
        "survives randomising fc"
    )
    assert SURVIVES <= 0.85
    changed = sanity_line(_check_with([[1.0, 1.0], [0.2, 0.3], [0.1, 0.1], [0.0, 0.1]]), "gbp")
    assert changed.endswith(
        "0.25 after fc, mean 0.13 over the cascade, 0.05 with all layers random: changes with the weights"
    )


def test_blank_maps_of_randomised_networks_are_outcomes_not_warnings(trained: tuple[nn.Module, torch.Tensor]) -> None:
    """A randomised network's Grad-CAM is often all zeros: that is what the check measures, so explain's blank-map
    warning stays quiet there, while the trained model's own blank map still warns."""
    model, images = trained
    with pytest.warns() as caught:
        result = ds.sanity_check(model, images[:4], methods=["gradcam"], seed=0)
        warnings.warn("sentinel", UserWarning, stacklevel=1)  # pytest.warns needs one warning
    blank_steps = [
        step for step, maps in enumerate(result.maps["gradcam"][1:]) if (maps.flatten(1).abs().amax(1) == 0).any()
    ]
    assert blank_steps, "no randomised step gave a blank map: the test no longer tests anything"
    assert not [w for w in caught if "all zeros" in str(w.message)]
    dead = copy.deepcopy(model)
    last = [m for m in dead.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    with pytest.warns(UserWarning, match="all zeros"):
        ds.sanity_check(dead, images[:4], methods=["gradcam"], seed=0)
