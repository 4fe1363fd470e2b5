"""LRP on transformers (conservative propagation, Ali et al. 2022) and the refusal of functions without a rule.

Most checks run on a tiny ViT built here (8x8 images, 4 patches, 2 blocks) in float64: its attention is written as
``nn.MultiheadAttention``, ``F.scaled_dot_product_attention`` or ``softmax(q k^T) @ v``; one check runs torchvision's
vit_b_16 at 224x224 (one forward and backward pass), a few the timm / Hugging Face / torchvision Swin and ConvNeXt.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import deepscope as ds


def lrp(model: nn.Module, x: torch.Tensor, **options) -> ds.Explanation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method="lrp", **options)


def books_gap(e: ds.Explanation) -> torch.Tensor:
    """|sum(attribution) + what the constants kept - score| / |score| per input: 0 when relevance is conserved."""
    total = e.attribution.flatten(1).double().sum(dim=1)
    score = e.scores.double()
    kept = e.extras["constants"].double() * score if "constants" in e.extras else torch.zeros_like(score)
    return ((total + kept - score) / score).abs()


# A tiny vision transformer --------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block; ``kind`` says how attention is written (same weights, same function)."""

    def __init__(self, dim: int, heads: int, kind: str, bias: bool) -> None:
        super().__init__()
        self.kind, self.heads = kind, heads
        self.norm1 = nn.LayerNorm(dim, bias=bias)
        self.attention = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim, bias=bias), nn.GELU(), nn.Linear(2 * dim, dim, bias=bias))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "module":
            return self.attention(x, x, x, need_weights=False)[0]
        n, t, d = x.shape
        qkv = F.linear(x, self.attention.in_proj_weight, self.attention.in_proj_bias)
        q, k, v = qkv.reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.kind == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1) @ v
        return self.attention.out_proj(o.transpose(1, 2).reshape(n, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding (4x4 conv), optional class token and position embedding, two blocks, norm, head."""

    def __init__(self, kind: str = "module", bias: bool = True, token: bool = True, position: bool = True) -> None:
        super().__init__()
        dim = 8
        self.patches = nn.Conv2d(3, dim, 4, stride=4, bias=bias)
        self.class_token = nn.Parameter(0.2 * torch.randn(1, 1, dim)) if token else None
        self.position = nn.Parameter(0.5 * torch.randn(1, 4 + token, dim)) if position else None
        self.blocks = nn.Sequential(*(Block(dim, 2, kind, bias) for _ in range(2)))
        self.norm = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, 3, bias=bias)
        with torch.no_grad():  # LayerNorm starts as (1, 0): random affine parameters make the check sharper
            for norm in (self.norm, *(m for b in self.blocks for m in (b.norm1, b.norm2))):
                norm.weight.uniform_(0.5, 1.5)
                if norm.bias is not None:
                    norm.bias.normal_(0, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.position is not None:
            x = x + self.position
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0] if self.class_token is not None else x.mean(dim=1))


def tiny_vit(kind: str = "module", **options: bool) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyViT(kind, **options).double().eval()


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_the_three_attention_forms_compute_the_same_function():
    x = images()
    with torch.no_grad():
        reference = tiny_vit("module")(x)
        for kind in ("sdpa", "explicit"):
            torch.testing.assert_close(tiny_vit(kind)(x), reference)


@pytest.mark.parametrize("kind", ["sdpa", "explicit"])
@pytest.mark.parametrize("biases", [True, False])
def test_attention_in_every_form_gives_the_same_relevance(kind, biases):
    x = images()
    reference = lrp(tiny_vit("module"), x, biases=biases)
    other = lrp(tiny_vit(kind), x, biases=biases)
    torch.testing.assert_close(other.scores, reference.scores)
    torch.testing.assert_close(other.attribution, reference.attribution, rtol=1e-6, atol=1e-9)
    assert reference.attribution.abs().sum() > 0


def linearised_gradient_times_input(model: TinyViT, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ali et al.'s conservative propagation written out by hand: gradient x input of the network whose LayerNorm
    standard deviations, attention softmax weights and GELU slopes ``gelu(u) / u`` are held constant (detached)."""

    def norm(layer: nn.LayerNorm, h: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + layer.eps).detach()
        return (h - h.mean(-1, keepdim=True)) / std * layer.weight

    x = x.detach().requires_grad_(True)
    h = F.conv2d(x, model.patches.weight, stride=4).flatten(2).transpose(1, 2)
    n, t, d = h.shape
    for block in model.blocks:
        attention = block.attention
        a = norm(block.norm1, h)
        q, k, v = (a @ w.T for w in attention.in_proj_weight.chunk(3))
        q, k, v = (u.reshape(n, t, 2, d // 2).transpose(1, 2) for u in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / (d // 2) ** 0.5, dim=-1).detach()
        h = h + (weights @ v).transpose(1, 2).reshape(n, t, d) @ attention.out_proj.weight.T
        u = norm(block.norm2, h) @ block.mlp[0].weight.T
        h = h + (u * (F.gelu(u) / u).detach()) @ block.mlp[2].weight.T
    logits = norm(model.norm, h).mean(dim=1) @ model.head.weight.T
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return x.detach() * grad


def test_relevance_is_gradient_times_input_of_the_network_held_linear():
    """Without biases and with epsilon -> 0, LRP's rules make relevance equal to gradient x input of the network
    in which the normalisers, attention weights and activation slopes are constants (by induction over the layers:
    each rule hands on ``activation * gradient``), the closed form of Ali et al. 2022."""
    model = tiny_vit("module", bias=False, token=False, position=False)
    x = images() - 0.5
    e = lrp(model, x, epsilon=1e-12, first_rule=None)
    expected = linearised_gradient_times_input(model, x, e.targets)
    torch.testing.assert_close(e.attribution.double(), expected, rtol=1e-5, atol=1e-8)
    # The mean of the tokens is pooled by the epsilon rule, so the whole logit reaches the pixels.
    torch.testing.assert_close(e.attribution.double().sum(dim=(1, 2, 3)), e.scores.double(), rtol=1e-6, atol=0)
    # Plain gradient x input (nothing held constant) is not it: the check can tell the two apart.
    x_ = x.clone().requires_grad_(True)
    logits = model(x_)
    (grad,) = torch.autograd.grad(logits.gather(1, e.targets[:, None]).sum(), x_)
    assert not torch.allclose(x * grad, expected, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("kind", ["module", "sdpa", "explicit"])
def test_relevance_is_conserved_up_to_what_the_class_token_keeps(kind):
    model = tiny_vit(kind)
    x = images()
    e = lrp(model, x, biases=False, epsilon=1e-12)
    assert books_gap(e).max() < 1e-6
    # The class token is a learnt constant: the relevance it keeps is measured, and it is part of "absorbed".
    assert e.extras["constants"].abs().min() > 1e-3
    torch.testing.assert_close(e.extras["absorbed"], e.extras["constants"], rtol=1e-4, atol=1e-6)
    assert "constants=[" in repr(e)
    # Batch-independent: each input's relevance and constants are its own.
    single = lrp(model, x[1:2], biases=False, epsilon=1e-12)
    torch.testing.assert_close(single.attribution, e.attribution[1:2])
    torch.testing.assert_close(single.extras["constants"], e.extras["constants"][1:2])


def test_without_class_token_the_whole_score_reaches_the_pixels():
    """The position embedding is an added constant: biases=False leaves it out like a bias; with biases, it keeps
    its share of the relevance, reported in extras['constants']."""
    model = tiny_vit(token=False)
    x = images()
    e = lrp(model, x, biases=False, epsilon=1e-12)
    assert "constants" not in e.extras
    torch.testing.assert_close(e.attribution.double().sum(dim=(1, 2, 3)), e.scores.double(), rtol=1e-6, atol=0)
    with_biases = lrp(model, x)
    assert with_biases.extras["constants"].abs().min() > 1e-3
    assert with_biases.extras["absorbed"].sub(with_biases.extras["constants"]).abs().min() > 1e-3  # biases too


def test_model_is_left_as_found():
    model = tiny_vit()
    model.patches.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lrp(model, images())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# Real architectures (random weights, no downloads) ----------------------------------------------------------------


def test_vit_b_16_conserves_relevance_to_1e_3():
    """torchvision's vit_b_16 at 224x224, float32, one forward and backward pass (about 30 s on a busy core)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.vit_b_16(weights=None).eval()
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    e = lrp(model, x, biases=False)
    assert books_gap(e).max() < 1e-3
    assert 0 < e.extras["constants"].abs().max() < 0.1  # the class token keeps a little
    assert torch.isfinite(e.attribution).all()


def _swin() -> nn.Module:
    """torchvision's Swin (shifted windows, relative position bias, patch merging), two small stages."""
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer([4, 4], 16, [2, 1], [2, 2], [4, 4], num_classes=3)  # block 2: shifted windows


def _convnext() -> nn.Module:
    """torchvision's ConvNeXt (depthwise conv, LayerNorm2d, GELU, layer scale), two small stages."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    model = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], layer_scale=0.5, num_classes=3)
    return model


def _timm_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=3, img_size=32)


def _hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config)


@pytest.mark.parametrize(
    ("build", "size"),
    [(_swin, 32), (_convnext, 32), (_timm_vit, 32), (_hf_vit, 32)],
    ids=["swin", "convnext", "timm_vit_small", "hf_vit"],
)
def test_swin_convnext_timm_and_hugging_face_conserve_relevance(build, size):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build().eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    e = lrp(model, x, biases=False)
    assert books_gap(e).max() < 1e-3
    assert e.attribution.abs().sum() > 0


# Refusal --------------------------------------------------------------------------------------------------------


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.value, self.gate = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


class Net(nn.Module):
    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end
        self.gated = Gated()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.end == "gate":
            return self.head(self.gated(x))
        if self.end == "softmax":
            return torch.softmax(self.head(x), dim=1)
        if self.end == "inplace":
            h = self.gated.value(x)
            h.mul_(2.0)  # in place, its result not used: the tensor itself carries the mark
            return self.head(h)
        return self.head(F.interpolate(x[:, None], size=6, mode="linear")[:, 0])


@pytest.mark.parametrize(
    ("end", "message"),
    [
        ("gate", r"mul of two tensors that both depend on the inputs in gated \(Gated\)"),
        ("softmax", r"softmax \(not attention weights\) in the model's own forward \(Net\)"),
        ("interpolate", r"interpolate in the model's own forward \(Net\)"),
        ("inplace", r"mul_ in the model's own forward \(Net\)"),
    ],
)
def test_functions_without_a_rule_are_refused_by_name_and_module(end, message):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net(end).eval()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ds.BadInputError, match=message) as refused:
        ds.explain(model, torch.randn(2, 6), method="lrp")
    assert "integrated_gradients" in str(refused.value)  # says what to do instead
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_squeeze_and_excitation_networks_are_refused():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    with pytest.raises(ds.BadInputError, match=r"in features\.\d+\.block\.\d \(SqueezeExcitation\)"):
        ds.explain(model, torch.rand(1, 3, 32, 32), method="lrp")


def test_a_product_that_relevance_does_not_reach_is_not_refused():
    """A product of two tensors that both depend on the inputs, inside a gate held constant (detached): relevance
    never reaches it, as it never reaches the queries and keys of attention, so LRP has nothing to refuse."""

    class Held(Gated):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = torch.sigmoid((self.gate(x) * x).sum(dim=1, keepdim=True)).detach()
            return self.value(x) * scale

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Held().eval()
    x = torch.randn(2, 6)
    e = lrp(model, x, biases=False, first_rule=None, epsilon=1e-9)
    torch.testing.assert_close(e.attribution.sum(dim=1), e.scores, rtol=1e-4, atol=1e-6)


# Group and RMS normalisation --------------------------------------------------------------------------------------


class Normed(nn.Module):
    """conv -> GroupNorm -> ReLU -> mean -> linear, or linear -> RMSNorm -> ReLU -> linear; no biases."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.kind = norm
        if norm == "group":
            self.layer, self.norm = nn.Conv2d(3, 8, 3, bias=False), nn.GroupNorm(2, 8)
        else:
            self.layer, self.norm = nn.Linear(12, 8, bias=False), nn.RMSNorm(8)
        self.head = nn.Linear(8, 3, bias=False)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            if norm == "group":
                self.norm.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.layer(x)))
        return self.head(h.mean(dim=(2, 3)) if self.kind == "group" else h)

    def linearised(self, x: torch.Tensor) -> torch.Tensor:
        """The same with the standard deviation / root mean square held constant."""
        h = self.layer(x)
        if self.kind == "group":
            g = h.reshape(h.shape[0], 2, -1)
            std = torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + self.norm.eps).detach()
            h = ((g - g.mean(-1, keepdim=True)) / std).reshape(h.shape) * self.norm.weight.view(1, -1, 1, 1)
            return self.head(torch.relu(h).mean(dim=(2, 3)))
        eps = torch.finfo(h.dtype).eps if self.norm.eps is None else self.norm.eps
        rms = torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps).detach()
        return self.head(torch.relu(h / rms * self.norm.weight))


@pytest.mark.parametrize("norm", ["group", "rms"])
def test_group_and_rms_norm_hold_their_normaliser_constant(norm):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Normed(norm).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((3, 3, 6, 6) if norm == "group" else (3, 12), generator=generator, dtype=torch.float64)
    e = lrp(model, x, epsilon=1e-12, first_rule=None)
    x_ = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.linearised(x_).gather(1, e.targets[:, None]).sum(), x_)
    torch.testing.assert_close(e.attribution.double(), x * grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(e.attribution.flatten(1).double().sum(dim=1), e.scores.double(), rtol=1e-6, atol=0)


class _Doubled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2


def test_custom_autograd_functions_are_refused():
    """A custom autograd Function computes its forward without gradients, out of the rewrite's sight; its node in
    the graph is watched instead."""

    class Doubler(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _Doubled.apply(x)

    model = nn.Sequential(nn.Linear(4, 5), Doubler(), nn.Linear(5, 2)).eval()
    with pytest.raises(ds.BadInputError, match="the custom autograd Function _Doubled"):
        ds.explain(model, torch.randn(2, 4), method="lrp")
