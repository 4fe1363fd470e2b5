"""Attention rollout (Abnar & Zuidema 2020) for vision transformers.

The attention is read where it is computed: every call of ``torch.nn.functional.scaled_dot_product_attention``
during one forward pass (timm's and Hugging Face's attention call it), its probabilities recomputed from the call's
queries, keys, mask and scale, and every call of ``multi_head_attention_forward`` (torchvision's
``nn.MultiheadAttention``), asked for its weights. No module is hooked or changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import probe
from ..errors import BadInputError
from .base import Method, Result, defaults, register

FUSIONS = ("mean", "max", "min")
T = TypeVar("T")


def attention_probabilities(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """The attention probabilities ``[N, heads, T, S]`` that ``scaled_dot_product_attention`` weighs values with."""
    q, k = query.float(), key.float()
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention: each key head serves several query heads
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    logits = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    t, s = logits.shape[-2:]
    if is_causal:
        logits = logits.masked_fill(~torch.ones(t, s, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.float()
    return logits.softmax(dim=-1)


def rollout(attentions: list[Tensor], head_fusion: str = "mean") -> Tensor:
    """Abnar & Zuidema's rollout of per-layer attentions ``[N, heads, T, T]`` (first layer first): heads fused
    (mean, max or min), the residual added as 0.5 * A + 0.5 * I, rows renormalised to sum to 1, and the layers
    multiplied, last on the left: ``[N, T, T]``, row t the share of each input token in output token t."""
    if head_fusion not in FUSIONS:
        raise BadInputError(f"head_fusion={head_fusion!r} is not one of {', '.join(map(repr, FUSIONS))}.")
    result: Tensor | None = None
    for attention in attentions:
        fused = getattr(attention, "amax" if head_fusion == "max" else "amin" if head_fusion == "min" else "mean")(1)
        eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    assert result is not None
    return result


def read_attention(forward: Callable[[Tensor], T], inputs: Tensor) -> tuple[T, list[Tensor]]:
    """``forward(inputs)`` and the attention probabilities ``[N, heads, T, S]`` it computed, in call order: every
    ``scaled_dot_product_attention`` call's recomputed from its queries, keys, mask and scale, and every
    ``multi_head_attention_forward`` call's (torchvision's ``nn.MultiheadAttention``) asked of it."""
    attentions: list[Tensor] = []

    def record(query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> object:
        names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        given = {**dict(zip(names, args)), **kwargs}
        attentions.append(
            attention_probabilities(
                query.detach(),
                key.detach(),
                given.get("attn_mask"),
                bool(given.get("is_causal", False)),
                given.get("scale"),
                bool(given.get("enable_gqa", False)),
            )
        )
        return NotImplemented  # the attention itself runs as it would

    def record_module(*args: Any, **kwargs: Any) -> object:
        # nn.MultiheadAttention's functional form: its attention runs inside it, out of the mode's sight, so it is
        # asked once more for its per-head weights.
        _, weights = F.multi_head_attention_forward(
            *args, **{**kwargs, "need_weights": True, "average_attn_weights": False}
        )
        assert weights is not None
        attentions.append(weights.detach().float())
        return NotImplemented

    # nn.MultiheadAttention takes a fused fast path (no call to read) when no gradient is wanted; an input that
    # requires one keeps it on the path every other model takes. Nothing calls backward: no gradient is computed.
    x = inputs.detach().requires_grad_(True)
    replacements = {F.scaled_dot_product_attention: record, F.multi_head_attention_forward: record_module}
    with torch.enable_grad(), probe.rewrite(replacements):
        result = forward(x)
    return result, attentions


@register("attention_rollout")
class AttentionRollout(Method):
    """Abnar & Zuidema 2020: how much each patch flows into the class token through every layer's attention,
    residual included (0.5 * A + 0.5 * I, rows renormalised), heads fused by ``head_fusion``. Class-agnostic: the
    target only names the score reported. Without a leading class token, the rows of all tokens are averaged. The
    whole product: :func:`rollout` of :func:`read_attention`. Needs a model whose attention calls
    ``scaled_dot_product_attention`` (torchvision, timm, Hugging Face ViTs)."""

    options = defaults(head_fusion="mean")
    requires = "attention"
    needs_module = False  # reads torch calls, hooks no module
    needs_spatial = True
    single_input_only = "its map lays one image's tokens on a grid"
    blank_causes = "attention that never reaches the patch tokens"

    def attribute(self) -> Result:
        fusion = self.opts["head_fusion"]
        if fusion not in FUSIONS:
            raise BadInputError(f"head_fusion={fusion!r} is not one of {', '.join(map(repr, FUSIONS))}.")
        scores, attentions = read_attention(lambda x: self.forward(x)[0], self.inputs)
        self.scores = scores.detach()
        if not attentions:
            raise BadInputError(
                f"{self.name}: the model computed no attention (no call of torch.nn.functional."
                "scaled_dot_product_attention in its forward pass); it reads the attention of vision transformers "
                "(torchvision, timm, Hugging Face; a Hugging Face model built with attn_implementation='eager' needs "
                "attn_implementation='sdpa')."
            )
        tokens, n = attentions[-1].shape[-1], len(self.inputs)
        if any(a.shape[0] != n or a.shape[-1] != tokens or a.shape[-2] != tokens for a in attentions):
            shapes = sorted({(a.shape[0], *a.shape[-2:]) for a in attentions})
            raise BadInputError(
                f"{self.name}: the attention maps (batch, queries, keys) are {shapes} for {n} input(s): windowed or "
                "pooled attention, as in Swin; rollout multiplies attention over one token set (a plain ViT)."
            )
        flow = rollout(attentions, fusion).to(self.inputs.device)
        spatial = tuple(self.inputs.shape[2:])
        readings = probe.token_layouts(tokens, spatial)
        if len(readings) != 1:
            raise BadInputError(
                f"{self.name}: {tokens} tokens do not lay out on one grid of the inputs' aspect "
                f"({'x'.join(map(str, spatial))}) after {', '.join(map(str, probe.LEADING_TOKENS))} leading tokens."
            )
        layout = readings[0]
        share = flow[:, 0] if layout.skip else flow.mean(dim=1)
        grid = share[:, layout.skip :].reshape(len(share), *layout.grid)
        return Result(heatmap=grid)
