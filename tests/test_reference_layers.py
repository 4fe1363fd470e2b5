"""DeepLift and GradientSHAP at a layer (Captum's LayerDeepLift, LayerGradientShap) and Captum's DeepLift softmax rule,
against Captum on its basic models and resnet18, and against summation-to-delta and closed forms."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
import torch
from captum import attr as captum
from captum.testing.helpers import basic_models
from conftest import hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.errors import LayerNotFoundError

torchvision = pytest.importorskip("torchvision")


def explain(model: nn.Module, inputs: Any, method: str, **options: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, inputs, method=method, **options)


def peer(call: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


@functools.cache  # neither side changes the model
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def one_conv() -> nn.Module:
    return basic_models.BasicModel_ConvNet_One_Conv().eval()


def softmax_convnet() -> nn.Module:
    """Captum's BasicModel_ConvNet (conv-relu-pool twice, fc-relu-fc, nn.Softmax) with random head weights: its own
    all-ones heads give every class the same logit change, which the softmax rule cancels to zero."""
    model = basic_models.BasicModel_ConvNet().eval()
    torch.manual_seed(0)
    for linear in (model.fc1, model.fc2):
        nn.init.normal_(linear.weight)
    return model


def softmax_cnn() -> nn.Module:
    """conv-ReLU, linear-ReLU-linear, nn.Softmax: no max pooling, whose rule differs from Captum's where the
    baseline's maximum wins a window (tests/test_captum_families.py), so the softmax rule is compared alone."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.ReLU(), nn.Linear(8, 5), nn.Softmax(1)
    ).eval()


def smooth_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def images(n: int = 2, size: int = 32, channels: int = 3, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, channels, size, size)


# LayerDeepLift ------------------------------------------------------------------------------------------------------

# resnet18 reuses each block's ReLU module, which Captum's hooks refuse below layer4's last block; at these layers
# the reused ReLU's last call is the only one above the layer, and Captum runs.
DEEPLIFT_CASES = {
    "resnet18-layer4": (resnet18, lambda: images(2, 32), "layer4", 1e-6),
    "resnet18-layer4.1.conv2": (resnet18, lambda: images(2, 32), "layer4.1.conv2", 1e-6),
    "one-conv-conv1": (one_conv, lambda: 30 * images(3, 4, 1), "conv1", 1e-5),
    "softmax-convnet-fc1": (softmax_convnet, lambda: images(1, 10, 1), "fc1", 1e-6),
    "softmax-cnn-conv": (softmax_cnn, lambda: images(1, 10, 1), "0", 1e-6),  # one input: see below
    "mlp-sigmoid": (smooth_mlp, lambda: torch.randn(3, 6), "1", 1e-6),
}


@pytest.mark.parametrize("case", DEEPLIFT_CASES)
def test_layer_deeplift_equals_captum(case: str):
    build, inputs, layer, atol = DEEPLIFT_CASES[case]
    model, x = build(), inputs()
    baseline = 0.1 * torch.randn_like(x)
    e = explain(model, x, "deeplift", layer=layer, baseline=baseline, target=1)
    module = dict(model.named_modules())[layer]
    expected, delta = peer(
        lambda: captum.LayerDeepLift(model, module).attribute(x, baseline, target=1, return_convergence_delta=True)
    )
    torch.testing.assert_close(e.attribution, expected.detach(), rtol=1e-4, atol=atol)
    torch.testing.assert_close(e.extras["delta"], delta.float(), rtol=1e-3, atol=1e-5)
    multipliers = explain(model, x, "deeplift", layer=layer, baseline=baseline, target=1, multiply_by_inputs=False)
    expected = peer(
        lambda: captum.LayerDeepLift(model, module, multiply_by_inputs=False).attribute(x, baseline, target=1)
    )
    torch.testing.assert_close(multipliers.attribution, expected.detach(), rtol=1e-4, atol=atol)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("layer", ["conv2", "relu2", "pool", "conv3"])
def test_layer_deeplift_summation_to_delta(layer: str):
    """Where the layer cuts the network (everything after it is built of the rule's layers and depends on the
    inputs only through it), the attributions at the layer sum to f(x) - f(baseline)."""
    model = tiny_cnn("inplace")
    x = images(3, 16)
    baseline = 0.2 * torch.randn_like(x)
    e = explain(model, x, "deeplift", layer=layer, baseline=baseline, target=2)
    with torch.no_grad():
        change = model(x)[:, 2] - model(baseline)[:, 2]
    assert change.abs().min() > 1e-3
    sums = e.attribution.reshape(3, -1).double().sum(dim=1)
    torch.testing.assert_close(sums, change.double(), rtol=1e-4, atol=1e-6)
    assert e.extras["delta"].abs().max() < 1e-5
    assert e.layer == layer and e.attribution.shape[0] == 3 and e.heatmap.shape == (3, 16, 16)


def test_smoothgrad_of_layer_deeplift_without_noise_is_captums_noise_tunnel():
    model, x = smooth_mlp(), torch.randn(3, 6)
    e = explain(model, x, "smoothgrad", base="deeplift", layer="3", noise=0.0, samples=2, nt_type="vargrad")
    expected = peer(
        lambda: captum.NoiseTunnel(captum.LayerDeepLift(model, model[3])).attribute(
            x, nt_type="vargrad", nt_samples=2, stdevs=0.0, target=e.targets
        )
    )
    torch.testing.assert_close(e.attribution, expected.detach(), rtol=0, atol=1e-10)


class Words(nn.Module):
    """Token ids -> embedding -> mean -> linear-ReLU-linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 6)
        self.hidden = nn.Linear(6, 8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.hidden(self.embed(ids).mean(dim=1))))


def test_layer_deeplift_of_token_ids():
    """Token ids at the embedding layer: a baseline of ids (Captum's numbers), or a float tensor standing for the
    layer's output; the per-token values sum to the score's change either way."""
    model = Words().eval()
    ids = torch.randint(1, 20, (3, 7), generator=torch.Generator().manual_seed(0))
    pad = torch.zeros_like(ids)
    e = explain(model, ids, "deeplift", layer="embed", baseline=pad, target=2)
    expected = peer(lambda: captum.LayerDeepLift(model, model.embed).attribute(ids, pad, target=2))
    torch.testing.assert_close(e.attribution, expected.detach(), rtol=1e-4, atol=1e-6)
    assert e.heatmap.shape == (3, 7)
    with torch.no_grad():
        change = model(ids)[:, 2] - model(pad)[:, 2]
    torch.testing.assert_close(e.heatmap.sum(dim=1), change, rtol=1e-4, atol=1e-6)
    zero = explain(model, ids, "deeplift", layer="embed", baseline=torch.zeros(1, 7, 6), target=2)
    with torch.no_grad():
        at_zero = model.head(model.relu(model.hidden(torch.zeros(1, 6))))[:, 2]
    torch.testing.assert_close(zero.heatmap.sum(dim=1), model(ids)[:, 2].detach() - at_zero, rtol=1e-4, atol=1e-6)
    assert hooks_left(model) == 0


# LayerGradientShap ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "layer"), [(resnet18, "layer4"), (lambda: tiny_cnn(), "relu3")])
def test_layer_gradient_shap_equals_captum_where_the_path_does_not_matter(build, layer):
    """After these layers the network is linear (global average pooling and the head), so the gradient at the
    layer is the same at every point of the path: each sample gives Captum's number whatever the random draws."""
    model, x = build(), images(2, 32 if layer == "layer4" else 16)
    baseline = 0.1 * torch.randn(1, *x.shape[1:])
    e = explain(model, x, "gradient_shap", layer=layer, baseline=baseline, samples=3, seed=0, target=1)
    module = dict(model.named_modules())[layer]
    expected = peer(lambda: captum.LayerGradientShap(model, module).attribute(x, baseline, target=1, n_samples=3))
    torch.testing.assert_close(e.attribution, expected.detach(), rtol=1e-4, atol=1e-6)


def test_layer_gradient_shap_in_expectation_and_captum():
    """Through a non-linear rest of the network: E[sum] = f(x) - E_b[f(b)] at the layer too, and Captum's
    LayerGradientShap estimates the same expectation."""
    model, x = smooth_mlp(), torch.randn(3, 6)
    torch.manual_seed(5)
    references = torch.randn(10, 6)
    e = explain(
        model, x, "gradient_shap", layer="1", baseline=references, samples=4000, seed=0, target=1, batch_size=3000
    )
    assert e.attribution.shape == (3, 8)
    with torch.no_grad():
        expected = model(x)[:, 1] - model(references)[:, 1].mean()
    torch.testing.assert_close(e.attribution.sum(dim=1), expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    torch.manual_seed(0)
    reference = peer(
        lambda: captum.LayerGradientShap(model, model[1]).attribute(x, references, target=1, n_samples=4000)
    )
    torch.testing.assert_close(e.attribution, reference.detach(), rtol=0, atol=0.1 * float(reference.abs().max()))


def test_layer_gradient_shap_with_noise_is_the_mean_of_its_samples():
    """With noise, each sample's difference is the layer's output on that noisy input minus on the baseline."""
    model, x = smooth_mlp(), torch.randn(2, 6)
    e = explain(model, x, "gradient_shap", layer="3", baseline=0.5, samples=1, noise=0.2, seed=3, target=0)
    generator = torch.Generator().manual_seed(3)
    alpha = torch.rand(1, generator=generator)
    noise = torch.randn((1, 6), generator=generator)
    sigma = (0.2 * (x.amax(dim=1) - x.amin(dim=1)))[:, None]
    noisy, base = x + noise * sigma, torch.full_like(x, 0.5)
    point = (base + alpha * (noisy - base)).requires_grad_(True)
    hidden = model[:4](point)
    (grad,) = torch.autograd.grad(model[4](hidden)[:, 0].sum(), hidden)
    with torch.no_grad():
        expected = (model[:4](noisy) - model[:4](base)) * grad
    torch.testing.assert_close(e.attribution, expected, rtol=1e-5, atol=1e-6)


def test_layer_gradient_shap_refuses_token_ids():
    model = Words().eval()
    ids = torch.randint(1, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ds.BadInputError, match=r"integers.*integrated_gradients or deeplift at the layer"):
        ds.explain(model, ids, method="gradient_shap", layer="embed")
    assert hooks_left(model) == 0


@pytest.mark.parametrize("method", ["deeplift", "gradient_shap"])
def test_a_wrong_layer_name_lists_close_names(method: str):
    with pytest.raises(LayerNotFoundError, match=r"no layer 'conv4'.*Closest names: conv"):
        ds.explain(tiny_cnn(), images(2, 16), method=method, layer="conv4")


# Captum's DeepLift softmax rule -------------------------------------------------------------------------------------


def test_deeplift_through_a_final_softmax_equals_captum_input_by_input():
    """Captum's rule: the softmax's rescale multipliers minus their mean. Captum takes that mean over its whole
    batch (inputs and baselines); deepscope per input, which is Captum's number for each input explained alone."""
    model, x = softmax_cnn(), images(3, 10, 1)
    e = explain(model, x, "deeplift", target=2)
    for i in range(3):
        expected, delta = peer(
            lambda i=i: captum.DeepLift(model).attribute(x[i : i + 1], target=2, return_convergence_delta=True)
        )
        torch.testing.assert_close(e.attribution[i : i + 1], expected.detach(), rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(e.extras["delta"][i : i + 1], delta.float(), rtol=1e-3, atol=1e-7)
    single = explain(model, x[1:2], "deeplift", target=2)
    torch.testing.assert_close(single.attribution, e.attribution[1:2])


@pytest.mark.parametrize("softmax", ["module", "functional"])
def test_deeplift_softmax_rule_closed_form(softmax: str):
    """linear -> softmax: the multipliers of the logits are m_t (e_t - 1/C), m_t = (s_t(x) - s_t(x0)) / (z_t -
    z0_t); so the attributions are (x - b) W^T m_t (e_t - 1/C), and they miss f(x) - f(b) by m_t/C times the sum of
    the logits' changes, which extras['delta'] reports (0 when the logits' changes sum to 0)."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 4)

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.softmax(self.linear(x), dim=-1)

    model = (nn.Sequential(linear, nn.Softmax(dim=1)) if softmax == "module" else Functional()).eval()
    x, b = torch.randn(3, 5), torch.randn(3, 5)
    t = 1
    with torch.no_grad():
        z, z0 = linear(x), linear(b)
        s, s0 = z.softmax(1), z0.softmax(1)
    m = (s[:, t] - s0[:, t]) / (z[:, t] - z0[:, t])
    logit_multipliers = m[:, None] * (torch.eye(4)[t] - 0.25)
    expected = (x - b) * (logit_multipliers @ linear.weight.detach())
    e = explain(model, x, "deeplift", baseline=b, target=t)
    torch.testing.assert_close(e.attribution, expected, rtol=1e-5, atol=1e-7)
    gap = -m * (z - z0).sum(dim=1) / 4
    torch.testing.assert_close(e.extras["delta"], gap, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(e.attribution.sum(dim=1) - (s[:, t] - s0[:, t]), gap, rtol=1e-4, atol=1e-7)


def test_softmax_rule_leaves_attention_softmaxes_alone():
    """A softmax over the last axis of [N, T, T] (attention weights) keeps its gradient: the rule is the
    classifier's."""
    torch.manual_seed(0)

    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = x.view(-1, 3, 4)
            weights = (self.proj(tokens) @ tokens.transpose(1, 2)).softmax(dim=-1)
            return self.head((weights @ tokens).mean(dim=1))

    model = Attend().eval()
    x, b = torch.randn(2, 12), torch.zeros(2, 12)
    e = explain(model, x, "deeplift", baseline=b, target=0)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
    # No rule applies in this network (no element-wise non-linearity, attention's softmax untouched): the
    # multipliers are the plain gradient.
    torch.testing.assert_close(e.attribution, x * grad, rtol=1e-5, atol=1e-7)
