"""Layer-wise relevance propagation: closed forms on tiny nets, conservation, Captum, residuals, BatchNorm folding."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LRP as CaptumLRP
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

import deepscope as ds


def lrp(model: nn.Module, x: torch.Tensor, **options) -> ds.Explanation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method="lrp", **options)


def relative_gap(relevance: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    total = relevance.reshape(relevance.shape[0], -1).double().sum(dim=1)
    return ((total - scores.double()) / scores.double().abs()).abs()


def no_bias(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    return model


# Tiny networks -------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """conv-relu-maxpool-conv-relu-avgpool-conv-relu-GAP-linear-relu-dropout-linear, 1-D or 2-D."""

    def __init__(self, dims: int = 2, inplace: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        max_pool = nn.MaxPool2d if dims == 2 else nn.MaxPool1d
        avg_pool = nn.AvgPool2d if dims == 2 else nn.AvgPool1d
        gap = nn.AdaptiveAvgPool2d(2) if dims == 2 else nn.AdaptiveAvgPool1d(2)
        self.features = nn.Sequential(
            conv(3, 8, 3, padding=1),
            nn.ReLU(inplace=inplace),
            max_pool(2),
            conv(8, 12, 3, padding=1),
            nn.ReLU(inplace=inplace),
            avg_pool(2),
            conv(12, 16, 3, padding=1),
            nn.ReLU(inplace=inplace),
            gap,
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2**dims, 20), nn.ReLU(inplace=inplace), nn.Dropout(0.5), nn.Linear(20, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten, not nn.Flatten: Captum's LRP has no rule for nn.Flatten.
        return self.classifier(torch.flatten(self.features(x), 1))


def small_cnn(dims: int = 2, seed: int = 0, bias: bool = True, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN(dims).to(dtype).eval()
    return model if bias else no_bias(model)


def images(dims: int = 2, n: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, *(16,) * dims, dtype=dtype)


class Residual(nn.Module):
    """A residual block whose ReLUs, pooling and addition are written as modules, in place, or functionally."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=kind == "inplace")  # one module, called three times
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "functional":
            h = F.relu(self.stem(x))
            out = torch.relu_(self.conv1(h))
            out = torch.add(self.conv2(out), h).relu()
            return self.fc(out.mean(dim=(2, 3)))
        h = self.relu(self.stem(x))
        out = self.relu(self.conv1(h))
        out = self.conv2(out)
        if self.kind == "inplace":
            out += h
        else:
            out = out + h
        return self.fc(self.gap(self.relu(out)).flatten(1))


def residual(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return Residual(kind).eval()


# Closed forms --------------------------------------------------------------------------------------------


def test_linear_model_epsilon_is_input_times_weight():
    torch.manual_seed(0)
    model = nn.Linear(6, 3, bias=False).eval()
    x = torch.randn(4, 6)
    e = lrp(model, x, epsilon=0.0, first_rule=None)
    expected = x * model.weight.detach()[e.targets]
    assert torch.equal(e.attribution, expected)
    torch.testing.assert_close(e.attribution.sum(dim=1), model(x).detach().gather(1, e.targets[:, None])[:, 0])
    assert torch.equal(e.heatmap, e.attribution)  # feature vectors: the heatmap is the attribution


def stabilise(z: np.ndarray, epsilon: float) -> np.ndarray:
    return z + epsilon * np.where(z >= 0, 1.0, -1.0)


def hand_layer(a: np.ndarray, w: np.ndarray, b: np.ndarray, r: np.ndarray, rule: str, param: float, eps: float):
    """LRP through ``z_k = sum_j a_j w_kj + b_k`` for one input, written out with the textbook formulas."""
    relevance = np.zeros_like(a)
    for k in range(w.shape[0]):
        if rule == "epsilon":
            c = a * w[k]
            relevance += c / stabilise(c.sum() + b[k], eps) * r[k]
        elif rule == "gamma":
            c = a * (w[k] + param * np.maximum(w[k], 0))
            z = c.sum() + b[k] + param * max(b[k], 0)
            relevance += c / stabilise(z, eps) * r[k]
        elif rule == "alpha_beta":
            products = a * w[k]
            positive, negative = np.maximum(products, 0), np.minimum(products, 0)
            z_pos, z_neg = positive.sum() + max(b[k], 0), negative.sum() + min(b[k], 0)
            relevance += (
                param * positive / stabilise(z_pos, eps) - (param - 1) * negative / stabilise(z_neg, eps)
            ) * r[k]
    return relevance


@pytest.mark.parametrize(("rule", "param"), [("gamma", 0.25), ("gamma", 1.0), ("alpha_beta", 2.0), ("alpha_beta", 1.0)])
def test_gamma_and_alpha_beta_on_a_two_layer_net_match_the_formulas(rule, param):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)  # inputs of both signs reach the first layer
    targets = [0, 1, 2, 0, 1]
    name = "gamma" if rule == "gamma" else "alpha"
    # A large epsilon, so that the stabiliser's form (z + epsilon * sign(z), sign(0) = 1) is checked too.
    e = lrp(model, x, target=targets, rule=rule, first_rule=None, epsilon=0.05, **{name: param})
    w1, b1, w2, b2 = (p.detach().numpy() for p in model.parameters())
    for i, (row, target) in enumerate(zip(x.numpy(), targets)):
        hidden = np.maximum(w1 @ row + b1, 0)
        logits = w2 @ hidden + b2
        r2 = np.zeros(3)
        r2[target] = logits[target]
        r1 = hand_layer(hidden, w2, b2, r2, rule, param, 0.05)
        r0 = hand_layer(row, w1, b1, r1, rule, param, 0.05)
        np.testing.assert_allclose(e.attribution[i].double().numpy(), r0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first_rule", ["zbox", "flat", "wsquare"])
@pytest.mark.parametrize("bounds", ["default", "given"])
def test_first_layer_rules_on_a_one_layer_net_match_the_formulas(first_rule, bounds):
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double().eval()
    x = torch.rand(4, 5, dtype=torch.float64)
    given = {"low": torch.full((1, 5), -1.0, dtype=torch.float64), "high": torch.linspace(1, 2, 5).double()}
    options = given if bounds == "given" else {}
    e = lrp(model, x, first_rule=first_rule, epsilon=0.05, **options)
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    for i, row in enumerate(x.numpy()):
        if bounds == "given":
            low, high = given["low"].numpy()[0], given["high"].numpy()
        else:
            low, high = np.full(5, row.min()), np.full(5, row.max())
        target = int(e.targets[i])
        r = np.zeros(3)
        r[target] = (w @ row + b)[target]
        expected = np.zeros(5)
        for k in range(3):
            if first_rule == "zbox":
                c = row * w[k] - low * np.maximum(w[k], 0) - high * np.minimum(w[k], 0)
                z = c.sum() + b[k]
            else:
                c = np.ones(5) if first_rule == "flat" else w[k] ** 2
                z = c.sum()
            expected += c / stabilise(z, 0.05) * r[k]
        np.testing.assert_allclose(e.attribution[i].double().numpy(), expected, rtol=1e-6, atol=1e-9)


# Conservation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "rule", "first_rule"),
    [
        (2, "epsilon", None),
        (2, "epsilon", "zbox"),
        (1, "epsilon", "zbox"),
        (2, "gamma", "flat"),
        (1, "gamma", None),
        (2, "alpha_beta", "wsquare"),
        (2, "alpha_beta", None),
    ],
)
def test_relevance_is_conserved_on_a_cnn_without_biases(dims, rule, first_rule):
    """Alpha-beta conserves only where every neuron has contributions of both signs (true of the 2-D net here:
    the 1-D one has a neuron with no negative contribution, which alpha-beta gives alpha times its relevance)."""
    model = small_cnn(dims, bias=False)
    e = lrp(model, images(dims), rule=rule, first_rule=first_rule, epsilon=1e-9)
    assert relative_gap(e.attribution, e.scores).max() < 1e-4
    torch.testing.assert_close(e.heatmap, e.attribution.sum(dim=1))


def test_relevance_is_conserved_for_a_unit_target():
    model = small_cnn(bias=False)
    x = images()
    unit = ds.Unit("features.6", channel=3)  # the mean of the last conv's channel 3
    e = lrp(model, x, target=unit, epsilon=1e-9)
    with torch.no_grad():
        expected = model.features[:7](x)[:, 3].mean(dim=(1, 2))
    assert relative_gap(e.attribution, expected).max() < 1e-4


def resnet18_without_biases() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    model = no_bias(copy.deepcopy(model))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.zero_()
                module.running_mean.zero_()
    return model


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(2)
    return resnet18_without_biases(), torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "alpha_beta"])
def test_relevance_is_conserved_through_residual_connections(resnet, rule):
    model, x = resnet
    e = lrp(model, x, rule=rule)
    assert relative_gap(e.attribution, e.scores).max() < 0.01
    assert torch.isfinite(e.attribution).all()


def test_captum_lrp_does_not_conserve_on_the_same_resnet(resnet):
    """Documents the peer bug: autograd's gradient of ``a + b`` copies relevance to both branches."""
    model, x = resnet
    ours = lrp(model, x[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = CaptumLRP(copy.deepcopy(model)).attribute(x[:1], target=int(ours.targets[0])).detach()
    assert relative_gap(theirs, ours.scores)[0] > 10
    assert relative_gap(ours.attribution, ours.scores)[0] < 0.01


@pytest.mark.parametrize("kind", ["inplace", "functional"])
def test_relus_pooling_and_additions_in_every_form_give_the_same_relevance(kind):
    x = images(n=2)
    reference = lrp(residual("modules"), x)
    other = lrp(residual(kind), x)
    torch.testing.assert_close(other.attribution, reference.attribution)
    assert relative_gap(reference.attribution, reference.scores).max() < 1e-3


# Against Captum --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("epsilon", [1e-9, 0.1])
def test_epsilon_rule_matches_captum_on_a_plain_network(activation, epsilon):
    model = small_cnn(seed=3, dtype=torch.float64)  # with biases, max and average pooling, dropout
    if activation == "tanh":
        model.features[4] = nn.Tanh()  # Captum passes relevance through Tanh unchanged too
    x = images(n=4, dtype=torch.float64) - 0.5
    ours = lrp(model, x, epsilon=epsilon, first_rule=None)
    peer = copy.deepcopy(model)
    for module in peer.modules():
        # Captum's default rule is EpsilonRule(1e-9); max pooling keeps it (ours passes relevance to the winner).
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            module.rule = EpsilonRule(epsilon=epsilon)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = CaptumLRP(peer).attribute(x, target=ours.targets).detach()
    torch.testing.assert_close(ours.attribution.double(), theirs, rtol=1e-4, atol=1e-7)
    assert theirs.abs().sum() > 0


# BatchNorm folding -------------------------------------------------------------------------------------------


class WithNorm(nn.Module):
    """layer-BN-ReLU-layer-BN-ReLU-pool-linear for conv2d, conv1d or linear layers; ``gap`` puts an op between."""

    def __init__(self, kind: str, gap: bool = False) -> None:
        super().__init__()
        self.kind, self.gap = kind, gap
        if kind == "linear":
            self.layer1, self.norm1 = nn.Linear(12, 10), nn.BatchNorm1d(10)
            self.layer2, self.norm2 = nn.Linear(10, 8), nn.BatchNorm1d(8)
        else:
            conv, norm = (nn.Conv2d, nn.BatchNorm2d) if kind == "conv2d" else (nn.Conv1d, nn.BatchNorm1d)
            self.layer1, self.norm1 = conv(3, 10, 3, padding=1), norm(10)
            self.layer2, self.norm2 = conv(10, 8, 3, padding=1), norm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer1(x)
        h = torch.relu(self.norm1(h * 1.0 if self.gap else h))
        h = torch.relu(self.norm2(self.layer2(h)))
        if self.kind != "linear":
            h = h.mean(dim=tuple(range(2, h.ndim)))
        return self.fc(h)


def with_norm(kind: str, gap: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = WithNorm(kind, gap)
    with torch.no_grad():
        for norm in (model.norm1, model.norm2):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.normal_()  # negative scales flip weights' signs: gamma sees the difference
            norm.bias.normal_()
    return model.eval()


def folded_by_hand(model: WithNorm) -> nn.Module:
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for layer, norm in ((folded.layer1, folded.norm1), (folded.layer2, folded.norm2)):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            layer.weight.mul_(scale.view(-1, *(1,) * (layer.weight.ndim - 1)))
            layer.bias.copy_((layer.bias - norm.running_mean) * scale + norm.bias)
    folded.norm1, folded.norm2 = nn.Identity(), nn.Identity()
    return folded


@pytest.mark.parametrize("kind", ["conv2d", "conv1d", "linear"])
def test_batch_norm_is_folded_into_the_layer_before_it(kind):
    model = with_norm(kind)
    torch.manual_seed(1)
    x = torch.rand(3, 12) if kind == "linear" else torch.rand(3, 3, *(8,) * (2 if kind == "conv2d" else 1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    e = lrp(model, x, rule="gamma", gamma=0.5)
    expected = lrp(folded_by_hand(model), x, rule="gamma", gamma=0.5)
    torch.testing.assert_close(e.scores, expected.scores)
    torch.testing.assert_close(e.attribution, expected.attribution, rtol=1e-4, atol=1e-5)
    # The control: with an operation between conv and BN nothing is folded, and gamma gives another answer.
    unfolded = lrp(with_norm(kind, gap=True), x, rule="gamma", gamma=0.5)
    assert not torch.allclose(unfolded.attribution, e.attribution, rtol=1e-2, atol=1e-3)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), "the model was changed"


# Leaving the model as found ------------------------------------------------------------------------------------


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_model_modes_flags_and_weights_are_unchanged():
    model = residual("inplace")
    model.stem.weight.requires_grad_(False)
    model.fc.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    lrp(model, images(n=2), rule="alpha_beta")
    assert hooks_left(model) == 0 and torch._C._len_torch_function_stack() == 0
    assert [m.training for m in model.modules()] == modes
    assert not model.stem.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class Explode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom half-way through the model")


@pytest.mark.parametrize("where", ["forward", "target"])
def test_hooks_are_removed_when_an_error_is_raised(where):
    model = small_cnn()
    if where == "forward":
        model.features[5] = Explode()
    with pytest.raises(ds.DeepscopeError):
        lrp(model, images(), target=99 if where == "target" else None)
    assert all(not m._forward_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rule": "epsilom"}, "epsilon"),
        ({"first_rule": "z"}, "first_rule"),
        ({"alpha": 0.5}, "alpha"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"low": 2.0, "high": 1.0}, "low"),
        ({"low": torch.zeros(5)}, "broadcast"),
        ({"biases": "no"}, "biases must be True"),
    ],
)
def test_bad_options_are_explained(options, message):
    with pytest.raises(ds.BadInputError, match=message):
        lrp(small_cnn(), images(), **options)


def test_z_box_bounds_follow_the_inputs_through_a_flatten():
    torch.manual_seed(0)
    linear = nn.Linear(48, 4).eval()
    x = torch.rand(2, 3, 4, 4)
    low, high = torch.tensor([-1.0, 0.0, -0.5]).view(1, 3, 1, 1), torch.tensor([1.0, 2.0, 1.5]).view(1, 3, 1, 1)
    flat = lrp(nn.Sequential(nn.Flatten(), linear).eval(), x, low=low, high=high)
    direct = lrp(linear, x.flatten(1), low=low.expand_as(x).flatten(1), high=high.expand_as(x).flatten(1))
    torch.testing.assert_close(flat.attribution.flatten(1), direct.attribution)


@pytest.mark.parametrize("constants", ["numbers", "tensors"])
def test_normalisation_inside_the_model_passes_relevance_on(constants):
    """``(x - mean) / std`` inside the model: the division is a diagonal map (relevance passes unchanged), the
    subtraction a bias; so the inputs get the relevance the network gives its normalised inputs."""
    if constants == "numbers":
        mean, std_view = 0.5, 0.25
    else:
        mean, std_view = torch.full((1, 3, 1, 1), 0.5), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_cnn(bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - mean) / std_view)

    model, x = Normalised().eval(), images()
    e = lrp(model, x, biases=False, epsilon=1e-9)
    inner = lrp(model.net, (x - mean) / std_view, biases=False, epsilon=1e-9)
    torch.testing.assert_close(e.attribution, inner.attribution, rtol=1e-4, atol=1e-6)
    assert relative_gap(e.attribution, e.scores).max() < 1e-4


class _PaddedConv(nn.Conv2d):
    """A Conv2d subclass with its own forward (TensorFlow's asymmetric "SAME" padding done by hand)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride)


def test_conv_subclass_with_its_own_forward_conserves_relevance():
    torch.manual_seed(0)
    model = nn.Sequential(
        _PaddedConv(3, 4, 2, stride=2, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3, bias=False),
    ).eval()
    x = torch.randn(2, 3, 9, 9)
    e = ds.explain(model, x, method="lrp", first_rule=None, epsilon=1e-9)
    torch.testing.assert_close(e.attribution.sum(dim=(1, 2, 3)), e.scores, rtol=1e-4, atol=1e-6)


# Biases: the share they absorb, and rules without them ------------------------------------------------------------


def test_absorbed_share_of_a_linear_layer_is_its_bias_over_the_score():
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    e = lrp(model, x, epsilon=0.0, first_rule=None)
    bias = model.bias.detach()[e.targets]
    # R_j = x_j w_j / z * z, so sum(R) = z - b: the bias keeps b / z of the score.
    torch.testing.assert_close(e.extras["absorbed"].double(), bias / e.scores.double(), rtol=1e-5, atol=1e-6)
    assert e.extras["absorbed"].abs().min() > 0.01
    # Without the bias, R_j = x_j w_j / (z - b) * z: the whole score reaches the inputs.
    kept = lrp(model, x, epsilon=0.0, first_rule=None, biases=False)
    score = e.scores.double()
    expected = x * model.weight.detach()[e.targets] * (score / (score - bias))[:, None]
    torch.testing.assert_close(kept.attribution.double(), expected, rtol=1e-5, atol=1e-6)
    assert kept.extras["absorbed"].abs().max() < 1e-6


@pytest.mark.parametrize("biases", [True, False])
def test_absorbed_share_matches_the_hand_propagation(biases):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    # Without biases a layer's z can be small, so only a tiny epsilon leaves relevance conserved.
    epsilon = 0.05 if biases else 1e-9
    e = lrp(model, x, first_rule=None, epsilon=epsilon, biases=biases)
    w1, b1, w2, b2 = (p.detach().numpy() for p in model.parameters())
    shares = []
    for i, row in enumerate(x.numpy()):
        hidden = np.maximum(w1 @ row + b1, 0)  # the forward pass keeps its biases either way
        logits = w2 @ hidden + b2
        target = int(e.targets[i])
        r2 = np.zeros(3)
        r2[target] = logits[target]
        # Without biases, the rules' z leave them out.
        rule_b1, rule_b2 = (b1, b2) if biases else (np.zeros_like(b1), np.zeros_like(b2))
        r0 = hand_layer(
            row, w1, rule_b1, hand_layer(hidden, w2, rule_b2, r2, "epsilon", 0, epsilon), "epsilon", 0, epsilon
        )
        np.testing.assert_allclose(e.attribution[i].numpy(), r0, rtol=1e-5, atol=1e-6)
        shares.append(1 - r0.sum() / logits[target])
    np.testing.assert_allclose(e.extras["absorbed"].numpy(), shares, rtol=1e-5, atol=1e-6)
    if biases:
        assert np.abs(shares).max() > 0.05  # the check can tell a share from none
    else:
        assert np.abs(shares).max() < 1e-6


@pytest.mark.parametrize(
    ("rule", "first_rule", "gap"),
    [("epsilon", None, False), ("epsilon", "zbox", False), ("gamma", "zbox", False), ("epsilon", None, True)],
)
def test_rules_without_biases_conserve_relevance_on_a_batch_norm_cnn(rule, first_rule, gap):
    """Conv-BN-ReLU twice with folded BatchNorms (``gap``: the first BN not folded, an affine map of its own)."""
    model = with_norm("conv2d", gap=gap).double()
    torch.manual_seed(1)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    kept = lrp(model, x, rule=rule, first_rule=first_rule, epsilon=1e-12, biases=False)
    torch.testing.assert_close(kept.attribution.double().sum(dim=(1, 2, 3)), kept.scores.double(), rtol=1e-5, atol=0)
    assert kept.extras["absorbed"].abs().max() < 1e-5
    # The default keeps the biases (the folded BatchNorm shifts are large here) and reports what they absorbed.
    default = lrp(model, x, rule=rule, first_rule=first_rule, epsilon=1e-12)
    assert default.extras["absorbed"].abs().max() > 0.05
    torch.testing.assert_close(
        default.extras["absorbed"].double(),
        1 - default.attribution.double().sum(dim=(1, 2, 3)) / default.scores.double(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_absorbed_share_is_in_the_repr_and_the_figure():
    e = lrp(small_cnn(), images())
    assert e.extras["absorbed"].shape == (3,)
    assert "absorbed=[" in repr(e)
    texts = [text.get_text() for text in e.figure().findobj(lambda artist: hasattr(artist, "get_text"))]
    assert sum("absorbed" in text for text in texts) == 3  # one per input
    assert "absorbed" not in repr(ds.explain(small_cnn(), images(), method="saliency"))


@pytest.mark.parametrize("head", ["linear", "matmul"])
def test_functional_conv_and_linear_calls_take_the_layers_rule(head):
    """F.conv2d / F.linear / ``x @ W`` called with a layer's weights outside the module (as Keras and Swin do) get
    the rules the module calls get (first_rule on the layer reading the inputs)."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 4, bias=head == "linear")
            self.kernel = nn.Parameter(self.fc.weight.detach().T.clone())  # [6, 4], for x @ kernel

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)).mean(dim=(2, 3))
            return F.linear(h, self.fc.weight, self.fc.bias) if head == "linear" else h @ self.kernel

    torch.manual_seed(0)
    functional = Functional().eval()
    modules = nn.Sequential(functional.conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), functional.fc)
    x = images(n=2)
    for options in ({"rule": "gamma"}, {"rule": "epsilon", "biases": False, "first_rule": None}):
        expected = lrp(modules, x, **options)
        torch.testing.assert_close(lrp(functional, x, **options).attribution, expected.attribution)
