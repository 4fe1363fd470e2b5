"""Captum's families (DeepLift, GradientSHAP, KernelSHAP, Shapley value sampling, feature ablation, NoiseTunnel's
variants, multiply_by_inputs) against Captum itself on its basic models and on torchvision architectures with
random weights, and against their axioms where Captum draws other random samples or breaks them."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from captum import attr as captum
from captum.testing.helpers import basic_models
from conftest import tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.perturbation import grid_segments

torchvision = pytest.importorskip("torchvision")


def explain(model: nn.Module, inputs: Any, method: str, **options: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, inputs, method=method, **options)


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def vgg11() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=10).eval()
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    return model


def conv_pool_linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 7 * 7, 5)).eval()


def smooth_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, 3, size, size)


def grid_mask(size: int, cells: int) -> torch.Tensor:
    return grid_segments((size, size), cells)


@dataclass
class Case:
    """One comparison: deepscope's ``method`` with ``options`` against ``reference(model, inputs)``."""

    id: str
    model: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    method: str
    options: dict[str, Any]
    reference: Callable[[nn.Module, Any], Any]
    target: Any = 1
    tolerance: dict[str, float] = field(default_factory=lambda: {"rtol": 1e-4, "atol": 1e-6})


def _two_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    return torch.randn(4, 3), torch.randn(4, 3)


def _tanh_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return torch.randn(4, 5), torch.randn(4, 5)


def _vectors() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(3, 6)


def _seeded(seed: int, call: Callable[[], Any]) -> Any:
    """Captum draws from torch's global generator: seed it as deepscope's ``seed`` option seeds its own."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return call()
    finally:
        torch.random.set_rng_state(state)


CASES = [
    Case(
        "deeplift-relu-linear-two-inputs",
        lambda: basic_models.ReLULinearModel().eval(),
        _two_inputs,
        "deeplift",
        {"baseline": (0.5, -0.5)},
        lambda m, x: captum.DeepLift(m).attribute(x, (torch.full_like(x[0], 0.5), torch.full_like(x[1], -0.5))),
        target=0,
    ),
    Case(
        "deeplift-tanh-two-inputs",
        lambda: basic_models.TanhDeepLiftModel().eval(),
        _tanh_inputs,
        "deeplift",
        {},
        lambda m, x: captum.DeepLift(m).attribute(x, target=2),
        target=2,
    ),
    Case(
        "deeplift-sigmoid-tanh-mlp",
        smooth_mlp,
        _vectors,
        "deeplift",
        {"baseline": 0.3},
        lambda m, x: captum.DeepLift(m).attribute(x, 0.3, target=1),
    ),
    Case(
        "deeplift-multipliers",
        smooth_mlp,
        _vectors,
        "deeplift",
        {"multiply_by_inputs": False},
        lambda m, x: captum.DeepLift(m, multiply_by_inputs=False).attribute(x, target=1),
    ),
    Case(
        "deeplift-vgg11",
        vgg11,
        lambda: images(2, 32),
        "deeplift",
        {},
        lambda m, x: captum.DeepLift(m).attribute(x, target=1),
        tolerance={"rtol": 1e-3, "atol": 1e-7},
    ),
    Case(
        "integrated_gradients-not-multiplied",
        smooth_mlp,
        _vectors,
        "integrated_gradients",
        {"multiply_by_inputs": False, "steps": 16},
        lambda m, x: captum.IntegratedGradients(m, multiply_by_inputs=False).attribute(x, target=1, n_steps=16),
    ),
    Case(
        "feature_ablation-resnet18",
        resnet18,
        lambda: images(1, 32),
        "feature_ablation",
        {"grid": 4},
        lambda m, x: captum.FeatureAblation(m).attribute(
            x, target=1, feature_mask=grid_mask(32, 4)[None, None], perturbations_per_eval=16
        ),
    ),
    Case(
        "feature_ablation-two-inputs",
        lambda: basic_models.ReLULinearModel().eval(),
        _two_inputs,
        "feature_ablation",
        {"baseline": 0.25},
        lambda m, x: captum.FeatureAblation(m).attribute(
            x, baselines=(0.25, 0.25), target=0, feature_mask=(torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4, 5]]))
        ),
        target=0,
    ),
    Case(
        "shapley_sampling-resnet18",
        resnet18,
        lambda: images(1, 32),
        "shapley_sampling",
        {"grid": 2, "samples": 3, "seed": 7},
        lambda m, x: _seeded(
            7,
            lambda: captum.ShapleyValueSampling(m).attribute(
                x, target=1, feature_mask=grid_mask(32, 2)[None, None], n_samples=3, perturbations_per_eval=16
            ),
        ),
    ),
    Case(
        "shapley_sampling-vectors",
        smooth_mlp,
        _vectors,
        "shapley_sampling",
        {"samples": 5, "seed": 3},
        lambda m, x: _seeded(3, lambda: captum.ShapleyValueSampling(m).attribute(x, target=1, n_samples=5)),
    ),
    Case(  # all 2^4 - 2 coalitions fit in the samples: KernelSHAP is exact, as Captum's ShapleyValues
        "kernel_shap-exact",
        tiny_cnn,
        lambda: images(2, 16),
        "kernel_shap",
        {"grid": 2, "samples": 64},
        lambda m, x: captum.ShapleyValues(m).attribute(
            x, target=1, feature_mask=grid_mask(16, 2)[None, None], perturbations_per_eval=24
        ),
    ),
    Case(
        "smoothgrad-sq-of-integrated-gradients",
        smooth_mlp,
        _vectors,
        "smoothgrad",
        {
            "base": "integrated_gradients",
            "nt_type": "smoothgrad_sq",
            "noise": 0.0,
            "samples": 2,
            "baseline": 0.5,
            "steps": 12,
        },
        lambda m, x: captum.NoiseTunnel(captum.IntegratedGradients(m)).attribute(
            x, nt_type="smoothgrad_sq", nt_samples=2, stdevs=0.0, baselines=0.5, n_steps=12, target=1
        ),
    ),
    Case(
        "smoothgrad-vargrad-of-deeplift",
        smooth_mlp,
        _vectors,
        "smoothgrad",
        {"base": "deeplift", "nt_type": "vargrad", "noise": 0.0, "samples": 2},
        lambda m, x: captum.NoiseTunnel(captum.DeepLift(m)).attribute(
            x, nt_type="vargrad", nt_samples=2, stdevs=0.0, target=1
        ),
        tolerance={"rtol": 0, "atol": 1e-10},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_numbers_as_captum(case: Case):
    model, inputs = case.model(), case.inputs()
    ours = explain(model, inputs, case.method, target=case.target, **case.options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = case.reference(model, inputs)
    pairs = zip(ours.attribution, reference) if isinstance(inputs, tuple) else [(ours.attribution, reference)]
    for got, expected in pairs:
        torch.testing.assert_close(got, expected.detach().float(), **case.tolerance)


# DeepLift's summation-to-delta, where Captum cannot run (reused ReLU modules: resnet18) or breaks it (overlapping
# max poolings: alexnet, squeezenet; F.relu calls it does not see).
SUMMATION_MODELS = {
    "resnet18": (resnet18, 32),
    "alexnet": (lambda: torchvision.models.alexnet(weights=None, num_classes=10).eval(), 64),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(weights=None, num_classes=10).eval(), 48),
    "functional_relu_cnn": (lambda: tiny_cnn("functional"), 16),
    "inplace_relu_cnn": (lambda: tiny_cnn("inplace"), 16),
}


@pytest.mark.parametrize("name", SUMMATION_MODELS)
def test_deeplift_summation_to_delta(name: str):
    build, size = SUMMATION_MODELS[name]
    torch.manual_seed(0)
    model = build()
    x = images(2, size)
    baseline = 0.1 * torch.randn_like(x)
    e = explain(model, x, "deeplift", baseline=baseline, target=1)
    with torch.no_grad():
        change = model(x)[:, 1] - model(baseline)[:, 1]
    sums = e.attribution.reshape(2, -1).double().sum(dim=1)
    torch.testing.assert_close(sums, change.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.extras["delta"], (sums - change.double()).float(), rtol=0, atol=1e-5)


def test_deeplift_closed_form_on_a_relu_network():
    """One hidden ReLU layer: attribution_i = (x_i - b_i) * sum_j W1[j, i] W2[t, j] m_j, m_j the rescale ratio."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    x, b = torch.randn(4, 5), torch.randn(4, 5)
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    z, z0 = model[0](x).detach(), model[0](b).detach()
    ratio = (z.relu() - z0.relu()) / (z - z0)
    expected = (x - b) * ((ratio * w2[2]) @ w1)
    e = explain(model, x, "deeplift", baseline=b, target=2)
    torch.testing.assert_close(e.attribution, expected, rtol=1e-5, atol=1e-6)


def test_deeplift_max_pool_rule_by_hand():
    """conv-ReLU-maxpool-linear, the rule written out: the change of each window's maximum goes to where the
    input's maximum is (max(y, y0) - y0) and where the baseline's is (y - max(y, y0)). Here Captum's numbers differ
    where the baseline's maximum wins a window (its sum still matches), so the rule is checked by hand."""
    import torch.nn.functional as F

    model, x = conv_pool_linear(), images(1, 16)
    conv, linear = model[0], model[4]
    b = torch.zeros_like(x)
    with torch.no_grad():
        a, a0 = conv(x), conv(b)
    r, r0 = F.relu(a), F.relu(a0)
    p, p0 = F.max_pool2d(r, 2), F.max_pool2d(r0, 2)
    pooled = p.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(linear(pooled.flatten(1))[:, 1].sum(), pooled)
    top = torch.maximum(p, p0)
    leaf, leaf0 = r.clone().requires_grad_(True), r0.clone().requires_grad_(True)
    (at_input,) = torch.autograd.grad(F.max_pool2d(leaf, 2), leaf, g * (top - p0))
    (at_reference,) = torch.autograd.grad(F.max_pool2d(leaf0, 2), leaf0, g * (p - top))
    (plain,) = torch.autograd.grad(F.max_pool2d(leaf, 2), leaf, g)
    changed = (r - r0).abs() > 1e-10
    multiplier = torch.where(changed, (at_input + at_reference) / torch.where(changed, r - r0, 1.0), plain)
    multiplier = multiplier * torch.where((a - a0).abs() > 1e-10, (r - r0) / (a - a0), (a > 0).float())
    leaf_x = x.clone().requires_grad_(True)
    (to_input,) = torch.autograd.grad(conv(leaf_x), leaf_x, multiplier)
    e = explain(model, x, "deeplift", target=1)
    torch.testing.assert_close(e.attribution, (x - b) * to_input, rtol=1e-5, atol=1e-7)


def test_deeplift_functional_gelu_silu_and_clamp_get_the_rule():
    """Functional non-linearities Captum's module hooks never see are rescaled too (EfficientNet-Lite's ReLU6 is
    ``F.relu(x).clamp(max=6)``): summation holds."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = torch.nn.functional.silu(torch.nn.functional.gelu(self.a(x)) + 0.5)
            return self.b(torch.nn.functional.relu(hidden).clamp(max=0.4))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(3, 6)
    e = explain(model, x, "deeplift", target=0)
    with torch.no_grad():
        change = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(e.attribution.sum(dim=1), change, rtol=1e-4, atol=1e-6)


def exact_shapley(model: nn.Module, x: torch.Tensor, segments: torch.Tensor, target: int) -> torch.Tensor:
    """Shapley values of the segments of one input by the definition (every coalition, in one batch), baseline 0."""
    count = int(segments.max()) + 1
    coalitions = torch.tensor(list(itertools.product([0.0, 1.0], repeat=count)))
    with torch.no_grad():
        scores = model(x[None] * coalitions[:, segments][:, None])[:, target].double()
    index = {tuple(row.int().tolist()): k for k, row in enumerate(coalitions)}
    values = torch.zeros(count, dtype=torch.float64)
    for row in coalitions:
        size = int(row.sum())
        for j in range(count):
            if row[j] == 0:
                weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
                with_j = row.clone()
                with_j[j] = 1.0
                values[j] += weight * (
                    scores[index[tuple(with_j.int().tolist())]] - scores[index[tuple(row.int().tolist())]]
                )
    return values


def test_kernel_shap_is_exact_on_a_linear_model_when_sampled():
    """With more features than the samples can enumerate, KernelSHAP recovers w * (x - b) of a linear model, as
    Captum's does."""
    torch.manual_seed(0)
    model = nn.Linear(40, 3).eval()
    x, b = torch.randn(2, 40), torch.randn(1, 40)
    e = explain(model, x, "kernel_shap", baseline=b, samples=120, seed=0, target=1)
    expected = (x - b) * model.weight.detach()[1]
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = _seeded(0, lambda: captum.KernelShap(model).attribute(x, b, target=1, n_samples=120))
    torch.testing.assert_close(reference.float(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["kernel_shap", "shapley_sampling"])
def test_shapley_methods_are_efficient_and_near_the_exact_values(method: str):
    """Efficiency holds exactly for every sample; the estimate is near the exact Shapley values (9 segments)."""
    model = tiny_cnn()
    x = images(1, 12)
    segments = grid_mask(12, 3)
    exact = exact_shapley(model, x[0], segments, target=2)
    e = explain(model, x, method, segments=segments, target=2, seed=0, samples=400 if method == "kernel_shap" else 60)
    with torch.no_grad():
        change = float(model(x)[0, 2] - model(torch.zeros_like(x))[0, 2])
    values = torch.stack([e.attribution[0, 0][segments == k][0] for k in range(9)]).double()
    assert float(values.sum()) == pytest.approx(change, rel=1e-4, abs=1e-6)
    assert (values - exact).abs().max() < 0.15 * exact.abs().max()


def test_gradient_shap_efficiency_in_expectation_and_captum():
    """E[sum of attributions] = f(x) - E_b[f(b)]; Captum's GradientShap estimates the same expectation."""
    model = smooth_mlp()
    x = _vectors()
    torch.manual_seed(5)
    references = torch.randn(10, 6)
    e = explain(model, x, "gradient_shap", baseline=references, samples=4000, seed=0, target=1, batch_size=3000)
    with torch.no_grad():
        expected = model(x)[:, 1] - model(references)[:, 1].mean()
    torch.testing.assert_close(e.attribution.sum(dim=1), expected, rtol=0, atol=0.03 * float(expected.abs().max()))
    reference = _seeded(
        0, lambda: captum.GradientShap(model).attribute(x, references, n_samples=4000, target=1).detach()
    )
    torch.testing.assert_close(e.attribution, reference, rtol=0, atol=0.1 * float(reference.abs().max()))


def test_gradient_shap_is_exact_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(6, 3).eval()
    x, b = torch.randn(3, 6), torch.randn(6)
    e = explain(model, x, "gradient_shap", baseline=b, samples=3, seed=0, target=2)
    torch.testing.assert_close(e.attribution, (x - b) * model.weight.detach()[2], rtol=1e-5, atol=1e-6)
    grads = explain(model, x, "gradient_shap", baseline=b, samples=3, seed=0, target=2, multiply_by_inputs=False)
    torch.testing.assert_close(grads.attribution, model.weight.detach()[2].expand(3, 6), rtol=1e-5, atol=1e-6)


def test_noise_tunnel_variants_combine_the_same_samples():
    """With one seed the three nt_types see the same noisy copies: vargrad = smoothgrad_sq - smoothgrad^2."""
    model = tiny_cnn()
    x = images(2, 16)
    runs = {
        kind: explain(model, x, "smoothgrad", nt_type=kind, samples=6, seed=0, base="input_x_gradient")
        for kind in ("smoothgrad", "smoothgrad_sq", "vargrad")
    }
    mean, squares = runs["smoothgrad"].attribution, runs["smoothgrad_sq"].attribution
    torch.testing.assert_close(runs["vargrad"].attribution, (squares - mean**2).clamp_min(0), rtol=1e-4, atol=1e-7)
    assert (runs["vargrad"].attribution > 0).any()


def test_smoothgrad_passes_options_to_its_base():
    model = smooth_mlp()
    x = _vectors()
    direct = explain(model, x, "integrated_gradients", baseline=0.5, steps=7, integration="riemann_middle")
    tunnel = explain(
        model,
        x,
        "smoothgrad",
        base="integrated_gradients",
        noise=0.0,
        samples=1,
        baseline=0.5,
        steps=7,
        integration="riemann_middle",
    )
    torch.testing.assert_close(tunnel.attribution, direct.attribution)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("smoothgrad", {"nt_type": "vargrd"}, "Did you mean 'vargrad'"),
        ("smoothgrad", {"steps": 5}, "not an option of base='saliency'"),
        ("smoothgrad", {"base": "cam", "layer": "conv1"}, "cannot average 'cam'"),
        ("deeplift", {"multiply_by_inputs": "yes"}, "must be True or False"),
        ("integrated_gradients", {"multiply_by_inputs": 1}, "must be True or False"),
        ("gradient_shap", {"baseline": torch.zeros(4, 3, 8, 8)}, r"shape \(B, 3, 16, 16\)"),
        ("gradient_shap", {"noise": -1.0}, "at least 0"),
    ],
)
def test_bad_options_say_what_to_change(method: str, options: dict[str, Any], message: str):
    layer = options.pop("layer", None)
    with pytest.raises(ds.BadInputError, match=message):
        ds.explain(tiny_cnn(), images(2, 16), method=method, layer=layer, **options)
