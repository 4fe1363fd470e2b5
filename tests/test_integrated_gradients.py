"""Integrated gradients' quadrature rules (``integration=``) and completeness tolerance (``completeness=``).

Each rule is checked against Captum's ``method=`` of the same name on a small CNN and on resnet18 (random weights,
small inputs), and against closed forms on a cubic model, where each rule's error is known; the completeness error
deepscope reports is checked against Captum's convergence delta, at the inputs, at a layer and with several inputs
and forward arguments.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum import attr as captum
from conftest import tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.quadrature import RULES

# Captum's name of each rule.
CAPTUM_METHOD = {
    "gauss_legendre": "gausslegendre",
    "riemann_trapezoid": "riemann_trapezoid",
    "riemann_left": "riemann_left",
    "riemann_right": "riemann_right",
    "riemann_middle": "riemann_middle",
}


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


MODELS = {"tiny": (tiny_cnn, (3, 16, 16)), "resnet18": (resnet18, (3, 32, 32))}


def test_every_rule_has_a_captum_counterpart():
    assert set(CAPTUM_METHOD) == set(RULES)


# Every rule on the small CNN; on resnet18 the trapezoid (tests/test_peers.py checks Gauss-Legendre there).
@pytest.mark.parametrize(("arch", "rule"), [("tiny", rule) for rule in RULES] + [("resnet18", "riemann_trapezoid")])
def test_rules_equal_captum(arch, rule):
    make, shape = MODELS[arch]
    model = make()
    torch.manual_seed(3)
    x, baseline = torch.randn(2, *shape), torch.rand(1, *shape)
    steps = 6
    e = ds.explain(model, x, "integrated_gradients", integration=rule, steps=steps, baseline=baseline, batch_size=8)
    with torch.no_grad():
        classes = model(x).argmax(1)
    expected, delta = captum.IntegratedGradients(model).attribute(
        x,
        baselines=baseline.expand_as(x),
        target=classes,
        n_steps=steps,
        method=CAPTUM_METHOD[rule],
        internal_batch_size=8,
        return_convergence_delta=True,
    )
    if rule == "riemann_trapezoid":
        # Captum weighs the n nodes linspace(0, 1, n) by 1/n (halved at the ends), which sums to 1 - 1/n; the
        # trapezoid rule's weights are 1/(n - 1): the same nodes, every weight n/(n - 1) times Captum's.
        expected = expected * steps / (steps - 1)
        with torch.no_grad():
            out, base = model(x), model(baseline.expand_as(x))
        rows = torch.arange(len(x))
        delta = expected.flatten(1).sum(1) - (out[rows, classes] - base[rows, classes])
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)
    # The error reported is Captum's convergence delta relative to f(x) - f(baseline).
    change = e.attribution.flatten(1).double().sum(1) - delta.double()
    torch.testing.assert_close(
        e.extras["completeness_error"].double(), (delta.double() / change).abs(), rtol=1e-3, atol=1e-6
    )
    assert e.extras["steps"].tolist() == [steps, steps]


class Cubic(nn.Module):
    """f(x) = (w . x)^3 and a second output -(w . x)^3: along the path from 0 the gradient is 3 a^2 (w . x)^2 w, so
    integrated gradients is exactly x * (w . x)^2 * w, and a rule with nodes a_i and weights c_i gives that times
    sum_i c_i 3 a_i^2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(6, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cube = (x @ self.w) ** 3
        return torch.stack([cube, -cube], dim=1)


# Closed forms of sum_i c_i 3 a_i^2 (exactly 1 = the integral of 3 a^2 over [0, 1]).
CUBIC_QUADRATURE = {
    ("gauss_legendre", 1): 3 / 4,  # one node at 1/2
    ("gauss_legendre", 2): 1.0,  # two nodes are exact up to degree 3
    ("gauss_legendre", 5): 1.0,
    ("riemann_trapezoid", 2): 3 / 2,  # (0 + 3) / 2
    ("riemann_trapezoid", 3): 9 / 8,  # (0 + 2 * 3/4 + 3) / 4
    ("riemann_middle", 2): 15 / 16,  # (3/16 + 27/16) / 2
    ("riemann_left", 2): 3 / 8,  # (0 + 3/4) / 2
    ("riemann_right", 2): 15 / 8,  # (3/4 + 3) / 2
}


@pytest.mark.parametrize(("rule", "steps"), list(CUBIC_QUADRATURE))
def test_rules_on_a_cubic_have_their_closed_form(rule, steps):
    model = Cubic()
    torch.manual_seed(1)
    x = torch.randn(3, 6, dtype=torch.float64)
    e = ds.explain(model, x, "integrated_gradients", integration=rule, steps=steps, target=0)
    factor = CUBIC_QUADRATURE[(rule, steps)]
    with torch.no_grad():
        exact = x * ((x @ model.w) ** 2)[:, None] * model.w
    torch.testing.assert_close(e.attribution.double(), (factor * exact).float().double(), rtol=1e-5, atol=1e-6)
    # The completeness error is the rule's relative error, the same for every input.
    torch.testing.assert_close(
        e.extras["completeness_error"].double(), torch.full((3,), abs(factor - 1)).double(), rtol=1e-4, atol=1e-6
    )


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3)).eval()


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_trapezoid"])
def test_completeness_adds_steps_until_reached(rule):
    model = mlp()
    torch.manual_seed(2)
    x = torch.randn(4, 6) * 3
    coarse = ds.explain(model, x, "integrated_gradients", integration=rule, steps=2)
    assert coarse.extras["completeness_error"].max() > 1e-3  # two steps are not enough here
    e = ds.explain(model, x, "integrated_gradients", integration=rule, steps=2, completeness=1e-3)
    assert e.extras["completeness_error"].max() <= 1e-3
    steps = int(e.extras["steps"][0])
    assert steps > 2 and steps & (steps - 1) == 0  # doubled from 2
    # The attribution is the one those steps give, and half of them were not enough.
    same = ds.explain(model, x, "integrated_gradients", integration=rule, steps=steps)
    torch.testing.assert_close(e.attribution, same.attribution)
    half = ds.explain(model, x, "integrated_gradients", integration=rule, steps=steps // 2)
    assert half.extras["completeness_error"].max() > 1e-3


def test_completeness_warns_when_max_steps_is_not_enough():
    model = mlp()
    x = torch.randn(2, 6) * 3
    with pytest.warns(UserWarning, match=r"completeness=1e-09 not reached in max_steps=4"):
        e = ds.explain(model, x, "integrated_gradients", steps=2, completeness=1e-9, max_steps=4)
    assert e.extras["steps"].tolist() == [4, 4]
    assert e.extras["completeness_error"].max() > 1e-9


def test_completeness_at_a_layer_equals_captum_delta():
    model = tiny_cnn()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 16, 16)
    e = ds.explain(model, x, "integrated_gradients", layer="conv2", steps=4, completeness=1e-3)
    steps = int(e.extras["steps"][0])
    assert steps > 4 and e.extras["completeness_error"].max() <= 1e-3
    with torch.no_grad():
        classes = model(x).argmax(1)
    expected, delta = captum.LayerIntegratedGradients(model, model.conv2).attribute(
        x, target=classes, n_steps=steps, return_convergence_delta=True
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)
    change = expected.flatten(1).double().sum(1) - delta.double()
    torch.testing.assert_close(
        e.extras["completeness_error"].double(), (delta.double() / change).abs(), rtol=1e-3, atol=1e-7
    )


class TwoInputs(nn.Module):
    """model(image, features, scale): a CNN on the image plus a linear term of the features, times a forward arg."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = tiny_cnn()
        self.linear = nn.Linear(4, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return (self.cnn(image) + torch.tanh(self.linear(features))) * scale[:, None]


def test_completeness_with_several_inputs_and_forward_args():
    model = TwoInputs().eval()
    torch.manual_seed(5)
    inputs = (torch.randn(2, 3, 16, 16), torch.randn(2, 4))
    scale = torch.tensor([1.0, 2.0])
    e = ds.explain(model, inputs, "integrated_gradients", target=1, forward_args=(scale,), steps=3, completeness=1e-4)
    assert e.extras["completeness_error"].max() <= 1e-4
    steps = int(e.extras["steps"][0])
    expected, delta = captum.IntegratedGradients(model).attribute(
        inputs, target=1, additional_forward_args=(scale,), n_steps=steps, return_convergence_delta=True
    )
    for ours, theirs in zip(e.attribution, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    total = sum(part.flatten(1).double().sum(1) for part in expected)
    torch.testing.assert_close(
        e.extras["completeness_error"].double(), (delta.double() / (total - delta.double())).abs(), rtol=1e-3, atol=1e-6
    )


def test_every_call_reports_its_completeness_error():
    model = mlp()
    x = torch.randn(3, 6)
    e = ds.explain(model, x, "integrated_gradients", steps=16)
    with torch.no_grad():
        change = model(x)[:, e.targets].diagonal() - model(torch.zeros_like(x))[:, e.targets].diagonal()
    expected = (e.attribution.sum(1).double() - change.double()).abs() / change.double().abs()
    torch.testing.assert_close(e.extras["completeness_error"].double(), expected, rtol=1e-3, atol=1e-7)
    assert "completeness_error" in repr(e)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"completeness": 0}, "completeness=0 must be a positive number"),
        ({"completeness": -0.1}, "must be a positive number"),
        ({"completeness": "1%"}, "must be a positive number"),
        ({"completeness": True}, "must be a positive number"),
        ({"completeness": float("nan")}, "must be a positive number"),
        ({"integration": "gausslegendre"}, "Did you mean 'gauss_legendre'"),
        ({"integration": "simpson"}, "is not a quadrature rule"),
        ({"integration": "riemann_trapezoid", "steps": 1}, "needs steps >= 2"),
        ({"completeness": 0.01, "steps": 8, "max_steps": 4}, "max_steps=4 must be an integer of at least 8"),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else None,
)
def test_bad_options_are_refused_clearly(options, message):
    model = mlp()
    with pytest.raises(ds.BadInputError, match=message):
        ds.explain(model, torch.randn(2, 6), "integrated_gradients", **options)


class Parabola(nn.Module):
    """f(x) = (w . x)^2 - w . x, which is 0 at x = 0 and wherever w . x = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x @ self.w
        return (s**2 - s)[:, None]


def test_completeness_error_where_f_x_equals_f_baseline():
    # x with w . x = 1: f(x) = f(0), so the relative error is 0 when the attributions sum to 0 (Gauss-Legendre,
    # exact for this quadratic) and infinite when they do not (the left Riemann sum's one node at the baseline).
    x = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    with pytest.warns(UserWarning, match="all zeros"):  # the gradient at the one node, the path's middle, is 0
        exact = ds.explain(Parabola(), x, "integrated_gradients", steps=1, target=0, completeness=0.01)
    assert exact.extras["completeness_error"].tolist() == [0.0, 0.0]
    assert exact.extras["steps"].tolist() == [1.0, 1.0]
    with pytest.warns(UserWarning, match="a change near 0 makes any relative error large"):
        left = ds.explain(
            Parabola(), x, "integrated_gradients", integration="riemann_left", steps=1, target=0, completeness=0.01,
            max_steps=1,
        )  # fmt: skip
    assert torch.isinf(left.extras["completeness_error"]).all()
