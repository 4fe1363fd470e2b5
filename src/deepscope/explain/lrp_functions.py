"""LRP at the torch functions a model calls: products, attention, normalisations, and the refusal of the rest.

:mod:`deepscope.explain.lrp` hooks Conv/Linear/BatchNorm modules and rewrites activations, poolings and additions.
This module adds the rules a transformer needs, after Ali et al. (ICML 2022, "XAI for Transformers: Better
Explanations through Conservative Propagation"): the network is linearised by holding its non-linear normalisers
constant in the backward pass, and the epsilon rule applies to what is left, which is linear:

* layer norm (``F.layer_norm``; ``nn.LayerNorm`` and its subclasses such as ConvNeXt's ``LayerNorm2d``): the
  division by the standard deviation is held constant, so ``(x - mean(x)) / std * w + b`` is a linear map of ``x``;
  group norm likewise per group, RMS norm (``x / rms * w``) passes relevance on unchanged;
* attention (``nn.MultiheadAttention``, ``F.scaled_dot_product_attention``, and ``softmax(q k^T) @ v`` written
  out): the softmax weights are held constant, so ``A @ v`` is a linear map of the values; queries and keys get
  no relevance;
* products with a constant (``x * gamma``, ``x / c``: layer scale, ``1 / sqrt(d)``) pass relevance on unchanged,
  products with another matrix (``x @ W``) are a linear map under the epsilon rule, functional ``F.linear`` and
  ``F.conv*`` (outside the modules, whose hooks apply the rules) take the layers' rule;
* learnt constants that join the inputs' features (a ViT's class token concatenated with the patch tokens, a
  position embedding added to them) keep the relevance that reaches them, reported as ``extras["constants"]``;
  with ``biases=False`` an added constant is left out of ``z`` like a bias.

Every other function that a tensor depending on the inputs passes through either passes relevance as its gradient
does, which is the LRP rule for it (views, indexing, concatenation, max pooling, dropout in eval mode: the
``NEUTRAL`` functions), or is marked: if relevance reaches a marked function in the backward pass, LRP has no rule
for what it computes (a product of two tensors that both depend on the inputs, a softmax outside attention, an
interpolation, ...) and refuses, naming it and the module that called it. A function on the path of the queries
and keys only is never reached, so it is never refused. Custom autograd Functions, which the rewrite cannot see,
are marked in the graph (:func:`watch_custom_functions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lrp import EPSILON, _Call, _linear, _PassThrough, _Relevance, _Split, _tracked

if TYPE_CHECKING:
    from .lrp import _Propagation

Table = dict[Callable[..., object], Callable[..., object]]


class _Unruled(torch.autograd.Function):
    """Returns ``output``; if relevance reaches it in the backward pass, ``reached()`` says so (and it passes on)."""

    @staticmethod
    def forward(ctx: Any, output: Tensor, reached: Callable[[], None]) -> Tensor:
        ctx.reached = reached
        return output.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        if bool((relevance != 0).any()):
            ctx.reached()
        return relevance, None


class _UnruledInPlace(torch.autograd.Function):
    """:class:`_Unruled` for a function that changed a tensor in place (``h.mul_(2)``): the tensor itself is
    marked, so the mark holds whether the model goes on with the result or with the tensor."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, reached: Callable[[], None]) -> Tensor:
        ctx.mark_dirty(tensor)
        ctx.reached = reached
        return tensor

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        if bool((relevance != 0).any()):
            ctx.reached()
        return relevance, None


class _Concatenated(torch.autograd.Function):
    """``torch.cat`` of pieces some of which are constants: their relevance goes to ``absorb``."""

    @staticmethod
    def forward(ctx: Any, dim: int, absorb: Callable[[Tensor], None], *pieces: Tensor) -> Tensor:
        ctx.dim, ctx.absorb = dim, absorb
        ctx.sizes = [piece.shape[dim] for piece in pieces]
        ctx.constant = [not _tracked(piece) for piece in pieces]
        return torch.cat(pieces, dim)

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, ...]:
        shares = relevance.split(ctx.sizes, ctx.dim)
        for share, constant in zip(shares, ctx.constant):
            if constant:
                ctx.absorb(share)
        return (None, None, *(None if constant else share for share, constant in zip(shares, ctx.constant)))


# Functions that pass relevance as their gradient does: it is conserved (or, for selections, goes where the value
# went). Looked up by name in torch, Tensor and torch.nn.functional.
_NEUTRAL_NAMES = (
    "__getitem__",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "split",
    "split_with_sizes",
    "tensor_split",
    "chunk",
    "unbind",
    "contiguous",
    "clone",
    "detach",
    "flatten",
    "unflatten",
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "permute",
    "transpose",
    "swapaxes",
    "swapdims",
    "movedim",
    "moveaxis",
    "t",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "narrow",
    "select",
    "index_select",
    "gather",
    "masked_fill",
    "roll",
    "flip",
    "repeat",
    "tile",
    "repeat_interleave",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "channel_shuffle",
    "to",
    "float",
    "double",
    "half",
    "bfloat16",
    "type",
    "type_as",
    "cpu",
    "cuda",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max",
    "amax",
    "min",
    "amin",
    # additions and subtractions that the addition rule declined: of a number (a bias with biases=False)
    "add",
    "add_",
    "__add__",
    "__radd__",
    "__iadd__",
    "sub",
    "sub_",
    "__sub__",
    "__isub__",
)
NEUTRAL: frozenset[Callable[..., object]] = frozenset(
    getattr(namespace, name) for name in _NEUTRAL_NAMES for namespace in (torch, Tensor, F) if hasattr(namespace, name)
)


_PRODUCTS = frozenset({"mul", "mul_", "__mul__", "__rmul__", "div", "__truediv__", "matmul", "__matmul__", "bmm"})


def _tensors(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _function_name(func: Callable[..., object]) -> str:
    name = getattr(func, "__name__", repr(func))
    return "max_pool" if name == "fn" else name


def otherwise(p: _Propagation) -> Callable[..., object]:
    """The fallback of the rewrite: run ``func``; mark its outputs if LRP has no rule for it (see the module doc)."""

    def call(func: Callable[..., Any], args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        result = func(*args, **kwargs)
        if func in NEUTRAL or getattr(func, "__name__", "") == "__get__" or p.in_ruled_module():
            return result
        tracked = sum(_tracked(t) for t in _tensors(list(args)) + _tensors(list(kwargs.values())))
        if not tracked:
            return result
        name = _function_name(func)
        both = " of two tensors that both depend on the inputs" if tracked > 1 and name in _PRODUCTS else ""
        reached = p.unruled_note(f"{name}{both}")
        if isinstance(result, Tensor) and args and result is args[0] and _tracked(result):
            return _UnruledInPlace.apply(result, reached)
        if isinstance(result, Tensor):
            return _Unruled.apply(result, reached) if _tracked(result) else result
        if type(result) in (tuple, list) and all(isinstance(t, Tensor) or t is None for t in result):
            items = [_Unruled.apply(t, reached) if _tracked(t) else t for t in result]
            return type(result)(items)
        if any(_tracked(t) for t in _tensors(result)):
            reached()  # an output we cannot wrap: refuse now rather than risk relevance crossing it unnoticed
        return result

    return call


def watch_custom_functions(scores: Tensor, p: _Propagation) -> None:
    """Mark the custom ``torch.autograd.Function`` calls in the graph of ``scores`` (the rewrite cannot see them:
    their forward runs without gradients): relevance reaching one is refused like a function without a rule. The
    marks are hooks on this graph's nodes, gone with it."""
    ours = (_Relevance, _PassThrough, _Unruled, _UnruledInPlace, _Concatenated, _Split)
    seen: set[object] = set()
    stack = [scores.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(following for following, _ in node.next_functions)
        forward_cls = getattr(node, "_forward_cls", None)
        if forward_cls is None or issubclass(forward_cls, ours):
            continue
        reached = p.unruled_note(f"the custom autograd Function {forward_cls.__name__}")

        def prehook(relevance: tuple[Tensor | None, ...], reached: Callable[[], None] = reached) -> None:
            if any(r is not None and bool((r != 0).any()) for r in relevance):
                reached()

        node.register_prehook(prehook)


def function_rules(p: _Propagation) -> Table:
    """Replacements for the functions of the module doc, bound to the propagation ``p``."""

    # The first parameters are named as torch names them, for callers that pass them by keyword.
    def layer_norm(
        input: object,
        normalized_shape: Any,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        eps: float = 1e-5,
        *_args: object,
    ) -> object:
        x = input
        if not p.live(x) or _tracked(weight) or _tracked(bias):
            return NotImplemented
        assert isinstance(x, Tensor)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        dims = tuple(range(-len(shape), 0))
        inv_std = torch.rsqrt(x.detach().var(dims, unbiased=False, keepdim=True) + eps)  # held constant

        def compute(t: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
            out = (t - t.mean(dims, keepdim=True)) * inv_std
            out = out if w is None else out * w
            return out if b is None else out + b

        output = F.layer_norm(x.detach(), shape, weight, bias, eps)
        return p.affine(x, output, compute, weight, bias)

    def group_norm(
        input: object,
        num_groups: int,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        eps: float = 1e-5,
    ) -> object:
        x = input
        if not p.live(x) or _tracked(weight) or _tracked(bias):
            return NotImplemented
        assert isinstance(x, Tensor)
        grouped = x.detach().reshape(x.shape[0], num_groups, -1)
        inv_std = torch.rsqrt(grouped.var(-1, unbiased=False, keepdim=True) + eps)
        view = (1, -1) + (1,) * (x.ndim - 2)

        def compute(t: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
            g = t.reshape(t.shape[0], num_groups, -1)
            out = ((g - g.mean(-1, keepdim=True)) * inv_std).reshape(t.shape)
            out = out if w is None else out * w.view(view)
            return out if b is None else out + b.view(view)

        output = F.group_norm(x.detach(), num_groups, weight, bias, eps)
        return p.affine(x, output, compute, weight, bias)

    def rms_norm(
        input: object,
        normalized_shape: Any,
        weight: Tensor | None = None,
        eps: float | None = None,
    ) -> object:
        x = input
        if not p.live(x) or _tracked(weight):
            return NotImplemented
        assert isinstance(x, Tensor)
        # x / rms(x) * w with rms held constant: a diagonal map, under which the epsilon rule passes relevance on.
        return _PassThrough.apply(x, F.rms_norm(x.detach(), normalized_shape, weight, eps))

    def linear(input: object, weight: Tensor, bias: Tensor | None = None) -> object:
        x = input
        if not p.live(x) or _tracked(weight) or _tracked(bias) or p.in_ruled_module():
            return NotImplemented  # inside an nn.Linear its forward hook applies the rule
        assert isinstance(x, Tensor)
        return p.linear_layer(x, F.linear(x.detach(), weight, bias), _linear, weight, bias)

    def convolution(
        func: Callable[..., Any],
        input: object,
        weight: Tensor,
        bias: Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> object:
        x = input
        if not p.live(x) or _tracked(weight) or _tracked(bias) or p.in_ruled_module():
            return NotImplemented  # inside an nn.Conv its forward hook applies the rule
        assert isinstance(x, Tensor)

        def compute(t: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
            return func(t, w, b, *args, **kwargs)

        return p.linear_layer(x, compute(x.detach(), weight, bias), compute, weight, bias, channels_first=True)

    def softmax(func: Callable[..., Any], x: object = None, *args: object, **kwargs: object) -> object:
        if not p.live(x):
            return NotImplemented
        # Attention weights: a product with values holds them constant. Relevance reaching them otherwise (a
        # softmax at the model's output, a gate) has no rule.
        weights = _Unruled.apply(func(x, *args, **kwargs), p.unruled_note("softmax (not attention weights)"))
        return p.attention_weights(weights)

    def product(
        func: Callable[..., Any], a: object = None, b: object = None, *args: object, **kwargs: object
    ) -> object:
        if args or kwargs:
            return NotImplemented
        if (p.is_attention(a) and not _tracked(b)) or (p.is_attention(b) and not _tracked(a)):
            return p.attention_weights(func(a, b))  # attention weights times a mask: still attention weights
        if p.live(a) == p.live(b) or _tracked(b if p.live(a) else a):
            return NotImplemented  # both depend on the inputs: no rule (a gate); neither: nothing to do
        x = a if p.live(a) else b
        assert isinstance(x, Tensor)
        output = func(a.detach() if x is a else a, b.detach() if x is b else b)  # type: ignore[union-attr]
        # x * c: a diagonal map, under which the epsilon rule passes relevance on (broadcast axes summed).
        return _PassThrough.apply(x, output)

    def quotient(
        func: Callable[..., Any], a: object = None, b: object = None, *args: object, **kwargs: object
    ) -> object:
        if p.is_attention(a) and not _tracked(b):
            return p.attention_weights(func(a, b, *args, **kwargs))
        if not p.live(a) or _tracked(b) or args or set(kwargs) - {"rounding_mode"} or kwargs.get("rounding_mode"):
            return NotImplemented
        assert isinstance(a, Tensor)
        return _PassThrough.apply(a, func(a.detach(), b))

    def matmul(func: Callable[..., Any], a: object = None, b: object = None, *args: object, **kwargs: object) -> object:
        if args or kwargs or not isinstance(a, Tensor) or not isinstance(b, Tensor) or p.live(a) == p.live(b):
            return NotImplemented
        x, fixed = (b, a) if p.live(b) else (a, b)

        def compute(t: Tensor, w: Tensor | None, _b: Tensor | None) -> Tensor:
            assert w is not None
            return func(w, t) if x is b else func(t, w)

        output = compute(x.detach(), fixed.detach(), None)
        if isinstance(fixed, nn.Parameter):  # a layer's weight (a Keras Dense kernel): the layers' rule
            return p.linear_layer(x, output, compute, fixed, None)
        # Attention weights, or another constant matrix: the epsilon rule.
        return _Relevance.apply(x, output, _Call(compute, fixed.detach(), None, EPSILON, p.epsilon))

    def attention(
        query: Tensor,
        key: Tensor,
        value: object,
        attn_mask: Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> object:
        if not p.live(value) or dropout_p > 0:
            return NotImplemented
        assert isinstance(value, Tensor)
        q, k = query.detach(), key.detach()
        repeats = q.shape[-3] // k.shape[-3] if enable_gqa else 1
        if repeats > 1:
            k = k.repeat_interleave(repeats, dim=-3)
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
        if is_causal:
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            mask = attn_mask.detach()
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = scores.softmax(dim=-1)  # held constant

        def compute(t: Tensor, _w: Tensor | None, _b: Tensor | None) -> Tensor:
            return weights @ (t.repeat_interleave(repeats, dim=-3) if repeats > 1 else t)

        output = compute(value.detach(), None, None)
        return _Relevance.apply(value, output, _Call(compute, None, None, EPSILON, p.epsilon))

    def multi_head_attention(*args: Any, **kwargs: Any) -> object:
        return _multi_head_attention(p, *args, **kwargs)

    table: Table = {F.layer_norm: layer_norm, torch.layer_norm: layer_norm, F.group_norm: group_norm}
    if hasattr(F, "rms_norm"):
        table[F.rms_norm] = rms_norm
    table[F.linear] = linear
    for conv in (F.conv1d, F.conv2d, F.conv3d):
        table[conv] = partial(convolution, conv)
    kinds: list[tuple[tuple[Callable[..., object], ...], Callable[..., object]]] = [
        ((F.softmax, torch.softmax, Tensor.softmax), softmax),
        ((torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__), product),
        ((torch.div, torch.true_divide, Tensor.div, Tensor.__truediv__, Tensor.__itruediv__), quotient),
        ((torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm, Tensor.bmm), matmul),
    ]
    for funcs, rule in kinds:
        for func in funcs:
            table[func] = partial(rule, func)
    table[F.scaled_dot_product_attention] = attention
    table[F.multi_head_attention_forward] = multi_head_attention
    for func in (torch.cat, torch.concat, torch.concatenate):
        table[func] = partial(_concatenation, p)
    return table


def _concatenation(p: _Propagation, tensors: Any, dim: int = 0, *args: object, **kwargs: object) -> object:
    """``torch.cat`` of tensors that depend on the inputs and constants (a class token): the constants' relevance
    is recorded as absorbed by them."""
    dim = int(kwargs.pop("axis", dim))  # type: ignore[call-overload]
    pieces = list(tensors) if isinstance(tensors, (tuple, list)) else []
    if args or kwargs or not pieces or not all(isinstance(t, Tensor) for t in pieces):
        return NotImplemented
    tracked = [_tracked(t) for t in pieces]
    if all(tracked) or not any(tracked) or not all(t.is_floating_point() for t in pieces):
        return NotImplemented
    return _Concatenated.apply(dim, p.absorb, *pieces)


def _multi_head_attention(
    p: _Propagation,
    query: Tensor,
    key: Tensor,
    value: object,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    bias_k: Tensor | None,
    bias_v: Tensor | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    static_k: Tensor | None = None,
    static_v: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> object:
    """``nn.MultiheadAttention``'s computation: the value projection, ``A @ v`` per head with the attention weights
    ``A`` held constant, and the output projection, each under its rule. ``A`` comes from torch's own function, so
    masks and causality are torch's."""
    if not p.live(value) or bias_k is not None or add_zero_attn or static_v is not None:
        return NotImplemented
    if training and dropout_p > 0:
        return NotImplemented
    assert isinstance(value, Tensor)
    batched = query.dim() == 3
    _, weights = F.multi_head_attention_forward(
        query.detach(),
        key.detach(),
        value.detach(),
        embed_dim_to_check,
        num_heads,
        in_proj_weight,
        in_proj_bias,
        bias_k,
        bias_v,
        add_zero_attn,
        dropout_p,
        out_proj_weight,
        out_proj_bias,
        training=training,
        key_padding_mask=key_padding_mask,
        need_weights=True,
        attn_mask=attn_mask,
        use_separate_proj_weight=use_separate_proj_weight,
        q_proj_weight=q_proj_weight,
        k_proj_weight=k_proj_weight,
        v_proj_weight=v_proj_weight,
        static_k=static_k,
        static_v=None,
        average_attn_weights=False,
        is_causal=is_causal,
    )
    assert weights is not None
    embed = query.shape[-1]
    if use_separate_proj_weight:
        assert v_proj_weight is not None
        w_v, b_v = v_proj_weight, None if in_proj_bias is None else in_proj_bias[2 * embed :]
    else:
        assert in_proj_weight is not None
        w_v = in_proj_weight[2 * embed :]
        b_v = None if in_proj_bias is None else in_proj_bias[2 * embed :]
    x = value if batched else value.unsqueeze(1)  # [S, N, E]
    weights = weights if batched else weights.unsqueeze(0)  # [N, H, L, S]
    source, batch = x.shape[0], x.shape[1]
    target = query.shape[0]
    head = embed // num_heads
    v = p.linear_layer(x, F.linear(x.detach(), w_v, b_v), _linear, w_v, b_v)
    heads = v.reshape(source, batch, num_heads, head).permute(1, 2, 0, 3)  # [N, H, S, d]
    fixed = weights.detach().to(heads.dtype)

    def mix(t: Tensor, _w: Tensor | None, _b: Tensor | None) -> Tensor:
        return fixed @ t

    mixed = _Relevance.apply(heads, mix(heads.detach(), None, None), _Call(mix, None, None, EPSILON, p.epsilon))
    merged = mixed.permute(2, 0, 1, 3).reshape(target, batch, embed)  # [L, N, E]
    output = p.linear_layer(
        merged, F.linear(merged.detach(), out_proj_weight, out_proj_bias), _linear, out_proj_weight, out_proj_bias
    )
    output = output if batched else output.squeeze(1)
    if not need_weights:
        return output, None
    returned = weights.mean(dim=1) if average_attn_weights else weights
    return output, returned if batched else returned.squeeze(0)
