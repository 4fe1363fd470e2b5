"""Occlusion: Captum's numbers, closed forms on tiny models, and the incremental engine against whole passes."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Occlusion as CaptumOcclusion
from conftest import TinyCNN
from torch import nn

import deepscope as ds
from deepscope.explain._incremental import Engine, Unsupported

MODES = [False, True]


class GeometryCNN(nn.Module):
    """Every geometry the incremental engine handles: padding, stride, dilation, ceil-mode max pooling, average
    pooling, batch norm (folded), grouped convolution, a residual sum, in-place ReLU and element-wise functions."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 8, 5, stride=2, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.bn1(self.conv1(x))))
        h = self.conv2(h).relu()
        h = h + torch.sigmoid(self.conv3(h)) * 0.5
        return self.fc(self.avg(h).amax(dim=(2, 3)))


class SignalCNN(nn.Module):
    """A 1D network: signals (N, C, L)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 5, padding=2)
        self.bn = nn.BatchNorm1d(4)
        self.pool = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(4, 4, 3, dilation=2, stride=2)
        self.avg = nn.AvgPool1d(3, stride=1, padding=1)
        self.fc = nn.Linear(4 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.relu(self.bn(self.conv1(x))))
        return self.fc(self.avg(self.conv2(h)).tanh().flatten(1))


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so that folding batch norm into a convolution is really tested."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model.eval()


def geometry_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batch_norms(GeometryCNN())


def signal_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batch_norms(SignalCNN())


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batch_norms(torchvision.models.resnet18(num_classes=10))


def _inputs(*shape: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape)


def _explain(model: nn.Module, x: torch.Tensor, **options: object) -> ds.Explanation:
    with warnings.catch_warnings():
        # A warning here would mean the incremental mode silently fell back: make it an error.
        warnings.simplefilter("error")
        return ds.explain(model, x, method="occlusion", **options)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected.float(), rtol=0, atol=1e-4 * scale)


# Against Captum ---------------------------------------------------------------------------------------------------

CASES = {
    # name: (model, input shape, window, stride, Captum's window (channels first), Captum's stride)
    "geometry_cnn": (geometry_cnn, (2, 3, 24, 24), (5, 7), (3, 4), (3, 5, 7), (3, 3, 4)),
    "resnet18_64": (resnet18, (1, 3, 64, 64), 16, 8, (3, 16, 16), (3, 8, 8)),
    "signal_cnn": (signal_cnn, (3, 2, 40), 6, 3, (2, 6), (2, 3)),
}


@pytest.mark.parametrize("incremental", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_equals_captum(case: str, incremental: bool) -> None:
    make, shape, window, stride, captum_window, captum_stride = CASES[case]
    model, x = make(), _inputs(*shape)
    baseline = x.mean(dim=[0, *range(2, x.ndim)], keepdim=True)
    e = _explain(model, x, window=window, stride=stride, batch_size=16, incremental=incremental)
    assert e.targets is not None
    expected = CaptumOcclusion(model).attribute(
        x,
        sliding_window_shapes=captum_window,
        strides=captum_stride,
        baselines=baseline,
        target=e.targets,
        perturbations_per_eval=16,
    )
    assert e.attribution is not None
    _close(e.attribution, expected)
    _close(e.heatmap, expected.mean(dim=1))


def test_windows_cut_at_the_border_like_captum() -> None:
    """(24 - 5) / 3 is not whole: the last window reaches past the border and is cut there, as in Captum."""
    model, x = geometry_cnn(), _inputs(1, 3, 24, 24)
    e = _explain(model, x, window=5, stride=3, baseline=0.5, target=2)
    expected = CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=(3, 5, 5), strides=(3, 3, 3), baselines=0.5, target=2
    )
    assert e.attribution is not None
    _close(e.attribution, expected)


# Incremental against whole passes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "shape", "window", "stride"),
    [(geometry_cnn, (3, 3, 30, 26), (6, 4), (5, 3)), (resnet18, (2, 3, 48, 48), 12, 6)],
    ids=["geometry_cnn", "resnet18_48"],
)
def test_incremental_equals_plain(make, shape, window, stride) -> None:  # type: ignore[no-untyped-def]
    model, x = make(), _inputs(*shape)
    # batch_size 7 mixes windows of different inputs and of border and inner positions in one batch.
    options = {"window": window, "stride": stride, "batch_size": 7, "target": lambda out: out[:, 1] - out[:, 0]}
    plain = _explain(model, x, incremental=False, **options)
    fast = _explain(model, x, incremental=True, **options)
    assert plain.attribution is not None and fast.attribution is not None
    _close(fast.attribution, plain.attribution)


def test_engine_reproduces_each_occluded_output() -> None:
    """Window by window, the engine's output equals the model run on the occluded input."""
    model, x = geometry_cnn(), _inputs(2, 3, 24, 24)
    baseline = torch.full_like(x, 0.3)
    engine = Engine(model, x[:1])
    engine.load(x)
    starts = [(r, y, c) for r in range(2) for y, c in itertools.product(range(0, 24, 5), range(0, 24, 7))]
    rows = torch.tensor([s[0] for s in starts])
    import numpy as np

    lo = np.array([(y, c) for _, y, c in starts])
    hi = np.minimum(lo + np.array([4, 6]), 24)
    output = engine.run(rows, engine.boxes(lo, hi), baseline)
    for b, (r, y, c) in enumerate(starts):
        occluded = x[r : r + 1].clone()
        occluded[:, :, y : hi[b, 0], c : hi[b, 1]] = 0.3
        with torch.no_grad():
            expected = model(occluded)[0]
        torch.testing.assert_close(output[b], expected, rtol=1e-4, atol=1e-5)


# Closed forms --------------------------------------------------------------------------------------------------------


class LeftHalf(nn.Module):
    """Looks only at the left half of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[:, :, :, : x.shape[-1] // 2]
        return self.fc(torch.relu(self.conv(left)).amax(dim=(2, 3)))


@pytest.mark.parametrize("incremental", MODES)
def test_irrelevant_region_gets_zero(incremental: bool) -> None:
    torch.manual_seed(0)
    model, x = LeftHalf().eval(), _inputs(2, 3, 16, 16)
    e = _explain(model, x, window=4, stride=4, incremental=incremental)
    # Zero up to rounding: the clean and occluded scores come from batches of different sizes, whose kernels may
    # sum in another order (1.5e-8 seen on some CPUs); the left half's values are orders of magnitude larger.
    assert e.heatmap[:, :, 8:].abs().max() < 1e-6
    assert e.heatmap[:, :, :8].abs().max() > 1e-3


@pytest.mark.parametrize("incremental", MODES)
def test_stride_past_the_window_leaves_gaps_at_zero(incremental: bool) -> None:
    """Windows at 0, 5 and 10 (cut to 10..11) of size 2: rows and columns 2-4 and 7-9 are never hidden."""
    model, x = geometry_cnn(), _inputs(1, 3, 12, 12)
    e = _explain(model, x, window=2, stride=5, target=0, incremental=incremental)
    gaps = [2, 3, 4, 7, 8, 9]
    assert (e.heatmap[0, gaps, :] == 0).all() and (e.heatmap[0, :, gaps] == 0).all()
    covered = e.heatmap[0][[0, 1, 5, 6, 10, 11]][:, [0, 1, 5, 6, 10, 11]]
    assert (covered != 0).all()


@pytest.mark.parametrize("incremental", MODES)
def test_several_windows_average_single_runs(incremental: bool) -> None:
    model, x = geometry_cnn(), _inputs(2, 3, 24, 24)
    sizes = [4, (6, 3), 8]
    both = _explain(model, x, window=sizes, stride=2, target=1, incremental=incremental)
    singles = [_explain(model, x, window=w, stride=2, target=1, incremental=incremental) for w in sizes]
    assert both.attribution is not None
    expected = torch.stack([s.attribution for s in singles]).mean(dim=0)  # type: ignore[misc]
    torch.testing.assert_close(both.attribution, expected)
    torch.testing.assert_close(both.heatmap, torch.stack([s.heatmap for s in singles]).mean(dim=0))


@pytest.mark.parametrize("incremental", MODES)
def test_probability_by_hand(incremental: bool) -> None:
    """Each element's value is the mean drop in softmax probability over the windows that cover it."""
    model, x = geometry_cnn(), _inputs(1, 3, 12, 12)
    window, stride, target = 6, 3, 4
    e = _explain(model, x, window=window, stride=stride, baseline=0.0, target=ds.probability(target),
                 incremental=incremental)  # fmt: skip
    with torch.no_grad():
        clean = model(x).softmax(dim=1)[0, target]
        total, count = torch.zeros(12, 12), torch.zeros(12, 12)
        for y, c in itertools.product(range(0, 7, stride), repeat=2):
            occluded = x.clone()
            occluded[:, :, y : y + window, c : c + window] = 0.0
            drop = clean - model(occluded).softmax(dim=1)[0, target]
            total[y : y + window, c : c + window] += drop
            count[y : y + window, c : c + window] += 1
    _close(e.heatmap[0], total / count)
    # Probabilities, not scores: a score drop would be orders of magnitude different on this model.
    scores = _explain(model, x, window=window, stride=stride, baseline=0.0, target=target, incremental=incremental)
    assert not torch.allclose(scores.heatmap, e.heatmap)


# The baseline ---------------------------------------------------------------------------------------------------


class PixelLinear(nn.Module):
    """score_k = sum over elements of w[k] * x: the drop of a one-pixel window is sum_c w[k, c, p] (x - b_c)."""

    def __init__(self, shape: tuple[int, ...], classes: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, *shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weight)


@pytest.mark.parametrize("incremental", MODES)
def test_mean_baseline_is_the_data_sets_mean(incremental: bool) -> None:
    """With data=, baseline="mean" is the data set's per-channel mean (not the inputs'), whatever form the data
    take; each pixel's value is then sum_c w[c, p] (x[c, p] - mean_c), the closed form of a linear model."""
    model = PixelLinear((2, 6, 6)).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 6, 6, generator=generator)
    data = torch.rand(50, 2, 6, 6, generator=generator) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    mean = data.double().mean(dim=(0, 2, 3)).float()
    expected = (model.weight[1] * (x[0] - mean.view(2, 1, 1))).sum(dim=0).detach()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, torch.zeros(50)), batch_size=16)
    for form in (data, (data, torch.zeros(50)), loader):
        e = _explain(model, x, window=1, stride=1, data=form, target=1, incremental=incremental)
        torch.testing.assert_close(e.heatmap[0], expected)
    # Without data, "mean" is the mean of the inputs: for one image, that image's own mean.
    own = _explain(model, x, window=1, stride=1, target=1, incremental=incremental)
    own_mean = x[0].mean(dim=(1, 2)).view(2, 1, 1)
    torch.testing.assert_close(own.heatmap[0], (model.weight[1] * (x[0] - own_mean)).sum(dim=0).detach())


@pytest.mark.parametrize("incremental", MODES)
def test_background_baseline_leaves_the_background_at_zero(incremental: bool) -> None:
    """On a black image with a bright object, a black patch on the background changes nothing, so the map is
    exactly 0 wherever no window reaches the object, for any model; a patch of the data set's mean grey adds a grey
    square there, and the model's output moves (the background gets attribution)."""
    torch.manual_seed(0)
    model = TinyCNN(classes=3).eval()
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, 4:8, 4:8] = 1.0
    window, stride = 2, 2
    black = _explain(model, x, window=window, stride=stride, baseline=0.0, target=0, incremental=incremental)
    far = torch.ones(16, 16, dtype=torch.bool)
    far[4 - window + 1 : 8 + window - 1, 4 - window + 1 : 8 + window - 1] = False
    assert (black.heatmap[:, far] == 0).all()
    assert (black.heatmap[:, 4:8, 4:8] != 0).all()
    grey = _explain(model, x, window=window, stride=stride, data=x, target=0, incremental=incremental)
    assert (grey.heatmap[:, far] != 0).float().mean() > 0.9


# Bad options, fall-backs, the model left alone ---------------------------------------------------------------------


class CountingCNN(GeometryCNN):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingCNN.calls += 1
        return super().forward(x)


@pytest.mark.parametrize(
    "options",
    [
        {"window": 25},
        {"window": (4, 30)},
        {"window": [4, 25]},
        {"window": []},
        {"window": 0},
        {"window": (4, 4, 4)},
        {"window": 2.5},
        {"window": 4, "stride": 0},
        {"window": 4, "stride": (2, -1)},
        {"window": 4, "batch_size": 0},
        {"window": 4, "incremental": "yes"},
        {"window": 4, "probability": "yes"},
        {"window": 4, "baseline": "nothing"},
        {"window": 4, "probability": True, "target": ds.Unit("conv1", 0)},
        {"window": 4, "baseline": float("nan")},
        {"window": 4, "baseline": 0.0, "data": torch.rand(4, 3, 24, 24)},
        {"window": 4, "data": torch.rand(4, 1, 24, 24)},
        {"window": 4, "data": torch.zeros(4, 3, 24, 24, dtype=torch.uint8)},
        {"window": 4, "data": torch.rand(0, 3, 24, 24)},
        {"window": 4, "data": "images/"},
    ],
    # ids name a tensor by its shape and dtype: its values differ between xdist workers, which must agree on ids
    ids=lambda options: ", ".join(
        f"{k}={tuple(v.shape)}:{v.dtype}" if isinstance(v, torch.Tensor) else f"{k}={v!r:.30}"
        for k, v in options.items()
    ),
)
def test_bad_options_raise_before_any_work(options: dict) -> None:
    CountingCNN.calls = 0
    model = CountingCNN().eval()
    with pytest.raises(ds.BadInputError):
        ds.explain(model, _inputs(1, 3, 24, 24), method="occlusion", **options)
    assert CountingCNN.calls == 0


class Untraceable(GeometryCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = x * 2
        return super().forward(x)


def test_untraceable_model_falls_back_with_a_warning() -> None:
    torch.manual_seed(0)
    model, x = Untraceable().eval(), _inputs(1, 3, 24, 24)
    with pytest.warns(UserWarning, match="cannot trace"):
        e = ds.explain(model, x, method="occlusion", window=6, stride=6, incremental=True)
    plain = _explain(model, x, window=6, stride=6, incremental=False)
    assert e.attribution is not None and plain.attribution is not None
    torch.testing.assert_close(e.attribution, plain.attribution)
    with pytest.raises(Unsupported, match="trace"):
        Engine(model, x)


def test_hooks_force_plain_passes_and_still_run() -> None:
    model, x = geometry_cnn(), _inputs(1, 3, 24, 24)
    calls = []
    handle = model.conv3.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.warns(UserWarning, match="hooks"):
            ds.explain(model, x, method="occlusion", window=6, stride=6, incremental=True)
    finally:
        handle.remove()
    assert calls  # the user's hook saw the occluded batches


@pytest.mark.parametrize("incremental", MODES)
def test_model_left_as_found(incremental: bool) -> None:
    model = geometry_cnn()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    _explain(model, _inputs(2, 3, 24, 24), window=6, stride=4, incremental=incremental)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_unit_target_runs_whole_passes() -> None:
    model, x = geometry_cnn(), _inputs(1, 3, 24, 24)
    e = _explain(model, x, window=8, stride=8, target=ds.Unit("conv2", 1))
    with torch.no_grad():
        clean = model.conv2(model.pool(model.relu(model.bn1(model.conv1(x)))))[:, 1].mean()
        occluded = x.clone()
        occluded[:, :, :8, :8] = x.mean(dim=(0, 2, 3), keepdim=True)
        drop = clean - model.conv2(model.pool(model.relu(model.bn1(model.conv1(occluded)))))[:, 1].mean()
    torch.testing.assert_close(e.heatmap[0, 0, 0], drop, rtol=1e-4, atol=1e-6)
