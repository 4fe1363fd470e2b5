"""Attention rollout (Abnar & Zuidema 2020) on torchvision, timm and Hugging Face ViTs built from tiny configs:
its rows sum to 1, and it equals a rollout computed by hand from each library's own attention."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
import transformers
from conftest import hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.rollout import read_attention, rollout

SMALL = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def torchvision_vit(layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()


def timm_vit(layers: int = 2, **extra) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=layers,
        num_heads=2, num_classes=5, **extra,
    ).eval()  # fmt: skip


def hf_vit(layers: int = 2, attn: str = "sdpa") -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        **{**SMALL, "num_hidden_layers": layers}, intermediate_size=64, num_labels=5, attn_implementation=attn
    )
    return transformers.ViTForImageClassification(config).eval()


BUILDERS = {"torchvision": torchvision_vit, "timm": timm_vit, "hf": hf_vit}


def images(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 32, 32)


def explain(model, x, **options) -> ds.Explanation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method="attention_rollout", **options)


def by_hand(attentions: list[torch.Tensor], fuse) -> torch.Tensor:
    """The rollout written out: fused heads, 0.5 A + 0.5 I, rows renormalised, multiplied last on the left."""
    result = torch.eye(attentions[0].shape[-1]).expand(len(attentions[0]), -1, -1)
    for a in attentions:
        fused = fuse(a)
        mixed = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1])
        mixed = mixed / mixed.sum(-1, keepdim=True)
        result = torch.bmm(mixed, result)
    return result


def torchvision_attentions(model, x) -> list[torch.Tensor]:
    """Each encoder layer's attention weights per head, from nn.MultiheadAttention itself."""
    seen: list[torch.Tensor] = []
    hooks = [layer.ln_1.register_forward_hook(lambda _m, _i, out: seen.append(out)) for layer in model.encoder.layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    attentions = []
    with torch.no_grad():
        for layer, h in zip(model.encoder.layers, seen):
            _, weights = layer.self_attention(h, h, h, need_weights=True, average_attn_weights=False)
            attentions.append(weights)
    return attentions


def timm_attentions(model, x) -> list[torch.Tensor]:
    """softmax(q k^T * scale) from each block's qkv projection."""
    seen: list[torch.Tensor] = []
    hooks = [block.norm1.register_forward_hook(lambda _m, _i, out: seen.append(out)) for block in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    attentions = []
    for block, h in zip(model.blocks, seen):
        n, t, c = h.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(h).reshape(n, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attentions.append(((qkv[0] * block.attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1).detach())
    return attentions


def hf_attentions(model, x) -> list[torch.Tensor]:
    """Hugging Face's own attention probabilities: the eager twin (same weights) with output_attentions."""
    eager = hf_vit(model.config.num_hidden_layers, attn="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        return list(eager(x, output_attentions=True).attentions)


REFERENCE = {"torchvision": torchvision_attentions, "timm": timm_attentions, "hf": hf_attentions}
FUSE = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}


@pytest.mark.parametrize("library", list(BUILDERS))
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("fusion", list(FUSE))
def test_rollout_equals_the_hand_computed_one(library, layers, fusion):
    model, x = BUILDERS[library](layers), images()
    e = explain(model, x, head_fusion=fusion)
    expected = by_hand(REFERENCE[library](model, x), FUSE[fusion])
    _, read = read_attention(model, x)
    torch.testing.assert_close(rollout(read, fusion), expected, rtol=1e-4, atol=1e-6)
    # The map: the class token's row over the 4x4 patches, upsampled to the input.
    grid = expected[:, 0, 1:].reshape(2, 1, 4, 4)
    upsampled = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(e.heatmap, upsampled, rtol=1e-4, atol=1e-6)
    assert hooks_left(model) == 0 and all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("library", list(BUILDERS))
def test_rollout_rows_sum_to_one(library):
    _, attentions = read_attention(BUILDERS[library](), images(3))
    flow = rollout(attentions, "max")
    torch.testing.assert_close(flow.sum(-1), torch.ones(flow.shape[:2]))
    assert (flow >= 0).all()


def test_one_layer_rollout_is_the_residual_mixed_attention():
    """One layer, one head's attention A: the rollout is (0.5 A + 0.5 I) with rows renormalised (they already sum to
    1, so it is exactly 0.5 A + 0.5 I)."""
    attention = torch.rand(1, 1, 5, 5).softmax(-1)
    expected = 0.5 * attention[:, 0] + 0.5 * torch.eye(5)
    torch.testing.assert_close(rollout([attention]), expected)


def test_register_tokens_are_skipped():
    """timm's ViT with a class token and 4 registers: the map is the class row over the 16 patches only."""
    model, x = timm_vit(reg_tokens=4), images()
    e = explain(model, x)
    flow = by_hand(timm_attentions(model, x), FUSE["mean"])
    grid = flow[:, 0, 5:].reshape(2, 1, 4, 4)
    expected = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(e.heatmap, expected, rtol=1e-4, atol=1e-6)


def test_models_without_attention_and_bad_fusion_are_refused():
    with pytest.raises(ds.BadInputError, match="scaled_dot_product_attention"):
        explain(tiny_cnn(), torch.randn(1, 3, 16, 16))
    with pytest.raises(ds.BadInputError, match=r"head_fusion='median'.*'mean', 'max', 'min'"):
        explain(torchvision_vit(), images(), head_fusion="median")
