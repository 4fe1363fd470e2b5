"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019, "LRP: an overview").

Relevance travels backwards as autograd's "gradient": the gradient that reaches a tensor *is* that tensor's
relevance. Four kinds of operation get their own backward here, all installed for one forward pass and all undone
when it ends (the model's parameters are frozen for that pass, so a tensor requires grad exactly when it depends on
the inputs):

* Conv1d/2d/3d and Linear layers (forward hooks): the output is wrapped in :class:`_Relevance`, whose backward
  applies an LRP rule to the layer (with a BatchNorm that directly follows it folded in, see below).
* average pooling (``avg_pool*``, ``adaptive_avg_pool*``, ``mean``; modules and functional calls alike, through
  :func:`deepscope.probe.rewrite`): the epsilon rule on the pooling as a linear map, i.e. proportional.
* element-wise activations (ReLU and its relatives, also functional and in-place): relevance passes unchanged.
* the sum of two tensors (``a + b``, ``torch.add``, ``out += identity``, ``a - b``): relevance is split in
  proportion to the two summands, so it is conserved through residual connections. Autograd's gradient of
  ``a + b`` would copy the relevance to both branches, which is why peer implementations blow up on ResNets.

:mod:`.lrp_functions` adds the rules of transformers (normalisations and attention held constant, products with
constants) and refuses any other function that relevance would reach; views, indexing, concatenation, max pooling
and dropout in eval mode pass relevance the way their gradient does, which is the LRP rule for them (max pooling:
winner takes all).

A rule is declarative: a sum of *parts*, each a signed sum of *terms* ``layer(inputs(x); params(W), params(b))``
that share one denominator ``z``; a term's relevance is ``inputs(x) * d/dinputs [term] . R / z``. The epsilon,
gamma, alpha-beta, z-box, flat and w-square rules below are a few lines each.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError, close_names
from .base import Method, Result, register

# Rules -----------------------------------------------------------------------------------------------------

Modifier = Callable[[Tensor], Tensor]


def _same(t: Tensor) -> Tensor:
    return t


def _positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def _input(x: Tensor, _call: _Call) -> Tensor:
    return x


def _input_positive(x: Tensor, _call: _Call) -> Tensor:
    return x.clamp(min=0)


def _input_negative(x: Tensor, _call: _Call) -> Tensor:
    return x.clamp(max=0)


def _ones(x: Tensor, _call: _Call) -> Tensor:
    return torch.ones_like(x)


def _low(x: Tensor, call: _Call) -> Tensor:
    assert call.low is not None
    return torch.zeros_like(x) + call.low


def _high(x: Tensor, call: _Call) -> Tensor:
    assert call.high is not None
    return torch.zeros_like(x) + call.high


@dataclass(frozen=True)
class Term:
    """``sign * layer(inputs(x); params(weight), params(bias) if bias else None)``."""

    inputs: Callable[[Tensor, _Call], Tensor] = _input
    params: Modifier = _same
    bias: bool = True
    sign: float = 1.0


@dataclass(frozen=True)
class Part:
    """Terms that share one denominator ``z`` (their sum); the part's relevance is weighted by ``scale``."""

    terms: tuple[Term, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class Rule:
    """An LRP rule: the relevance of a layer's input is the sum of its parts' relevances."""

    name: str
    parts: tuple[Part, ...]


EPSILON = Rule("epsilon", (Part((Term(),)),))
# Z-box (Montavon et al. 2017): x w - low w+ - high w-; low/high bound the inputs, so relevance stays positive.
ZBOX = Rule(
    "zbox",
    (
        Part(
            (
                Term(),
                Term(inputs=_low, params=_positive, bias=False, sign=-1.0),
                Term(inputs=_high, params=_negative, bias=False, sign=-1.0),
            )
        ),
    ),
)
# Flat and w-square ignore the inputs: relevance spreads over the receptive field (uniformly / by w^2).
FLAT = Rule("flat", (Part((Term(inputs=_ones, params=torch.ones_like, bias=False),)),))
WSQUARE = Rule("wsquare", (Part((Term(inputs=_ones, params=torch.square, bias=False),)),))


def without_biases(rule: Rule) -> Rule:
    """``rule`` with every term's bias left out: ``z`` sums the inputs' contributions only, so a layer passes on all
    the relevance it receives (up to epsilon) instead of leaving a bias's share behind."""
    parts = tuple(replace(part, terms=tuple(replace(term, bias=False) for term in part.terms)) for part in rule.parts)
    return replace(rule, parts=parts)


def gamma_rule(gamma: float) -> Rule:
    """Weights (and bias) ``w + gamma * w+``: favours positive contributions."""

    def params(t: Tensor) -> Tensor:
        return t + gamma * t.clamp(min=0)

    return Rule("gamma", (Part((Term(params=params),)),))


def alpha_beta_rule(alpha: float) -> Rule:
    """``alpha * (positive contributions) - beta * (negative contributions)``, ``beta = alpha - 1``.

    A contribution ``x w`` is positive when ``x`` and ``w`` share a sign, so each part sums two terms: that
    works for inputs of either sign, not only after a ReLU.
    """
    positive = Part(
        (Term(_input_positive, _positive), Term(_input_negative, _negative, bias=False)),
        scale=alpha,
    )
    negative = Part(
        (Term(_input_positive, _negative), Term(_input_negative, _positive, bias=False)),
        scale=-(alpha - 1.0),
    )
    return Rule("alpha_beta", (positive, negative))


def _divide(relevance: Tensor, z: Tensor, epsilon: float) -> Tensor:
    """``relevance / (z + epsilon * sign(z))`` with sign(0) = 1 (Captum's convention); 0 where that is 0."""
    denominator = z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(denominator == 0, torch.zeros_like(relevance), relevance / safe)


# Relevance through one layer call ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Call:
    """One call of a linear layer in the forward pass: what its rule needs to recompute it.

    ``weight``/``bias`` are detached copies (a following BatchNorm may replace them by the folded ones before
    the backward pass); the module's own parameters are never touched.
    """

    compute: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    weight: Tensor | None
    bias: Tensor | None
    rule: Rule
    epsilon: float
    channels_first: bool = False
    low: Tensor | None = None
    high: Tensor | None = None

    def relevance(self, x: Tensor, relevance: Tensor) -> Tensor:
        total = torch.zeros_like(x)
        with torch.enable_grad():
            for part in self.rule.parts:
                inputs = [term.inputs(x, self).detach().requires_grad_(True) for term in part.terms]
                z: Tensor | None = None
                for term, xt in zip(part.terms, inputs):
                    weight = None if self.weight is None else term.params(self.weight)
                    bias = None if self.bias is None or not term.bias else term.params(self.bias)
                    out = self.compute(xt, weight, bias)
                    out = out if term.sign == 1.0 else term.sign * out
                    z = out if z is None else z + out
                assert z is not None
                grads = torch.autograd.grad(z, inputs, _divide(relevance, z.detach(), self.epsilon))
                for xt, grad in zip(inputs, grads):
                    total = total + part.scale * (xt.detach() * grad)
        return total


class _Relevance(torch.autograd.Function):
    """Returns a layer's output unchanged; its backward maps output relevance to input relevance by the rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, output: Tensor, call: _Call) -> Tensor:
        ctx.call = call
        ctx.save_for_backward(x)
        return output.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return ctx.call.relevance(x, relevance), None, None


class _PassThrough(torch.autograd.Function):
    """Returns ``output``; relevance reaches ``x`` unchanged (activations, a BatchNorm folded into its layer, a
    product with a constant), summed over the axes ``output`` broadcast ``x`` to."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, output: Tensor) -> Tensor:
        ctx.shape = x.shape
        return output.clone()

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor, None]:
        return relevance.sum_to_size(ctx.shape), None


class _Split(torch.autograd.Function):
    """``a + b``; relevance is shared in proportion to the summands (epsilon-stabilised), broadcasting undone.

    A summand that does not depend on the inputs (a position embedding) keeps its share: ``absorb`` is told it.
    """

    @staticmethod
    def forward(
        ctx: Any, a: Tensor, b: Tensor, epsilon: float, absorb: Callable[[Tensor], None] | None = None
    ) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.epsilon, ctx.absorb = epsilon, absorb
        return a + b

    @staticmethod
    def backward(ctx: Any, relevance: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        a, b = ctx.saved_tensors
        share = _divide(relevance, a + b, ctx.epsilon)
        shares = []
        for summand, needed in ((a, ctx.needs_input_grad[0]), (b, ctx.needs_input_grad[1])):
            if needed:
                shares.append((summand * share).sum_to_size(summand.shape))
                continue
            if ctx.absorb is not None:
                ctx.absorb(summand * share)
            shares.append(None)
        return shares[0], shares[1], None, None


# Rewrites of torch functions ---------------------------------------------------------------------------------


def _tracked(x: object) -> bool:
    return isinstance(x, Tensor) and x.requires_grad and x.is_floating_point()


ACTIVATIONS: tuple[Callable[..., object], ...] = (
    *probe.RELU_FUNCTIONS,
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.leaky_relu_,
    F.elu,
    F.elu_,
    F.gelu,
    F.silu,
    F.softplus,
    torch.tanh,
    Tensor.tanh,
    F.tanh,
    torch.sigmoid,
    Tensor.sigmoid,
    F.sigmoid,
    F.hardswish,
    F.hardsigmoid,
    F.mish,
    F.selu,
    F.celu,
)
POOLINGS: tuple[Callable[..., object], ...] = (
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    torch.mean,
    Tensor.mean,
    torch.sum,
    Tensor.sum,
)
ADDITIONS: tuple[Callable[..., object], ...] = (
    torch.add,
    Tensor.add,
    Tensor.add_,
    Tensor.__add__,
    Tensor.__iadd__,
)
SUBTRACTIONS: tuple[Callable[..., object], ...] = (torch.sub, Tensor.sub, Tensor.__sub__, Tensor.__isub__)


def _rewrites(p: _Propagation) -> dict[Callable[..., object], Callable[..., object]]:
    """Replacements for activations, average poolings and additions, and those of :mod:`.lrp_functions`
    (normalisations, attention, products); untracked tensors are left alone."""
    from .lrp_functions import function_rules  # it builds on this module's autograd functions

    epsilon = p.epsilon

    def activation(func: Callable[..., Any], x: object, *args: object, **kwargs: object) -> object:
        if not _tracked(x):
            return NotImplemented
        assert isinstance(x, Tensor)
        # On a copy, so that in-place variants (nn.ReLU(inplace=True)) leave the graph intact.
        return _PassThrough.apply(x, func(x.detach().clone(), *args, **kwargs))

    def pooling(func: Callable[..., Any], x: object, *args: object, **kwargs: object) -> object:
        if not _tracked(x):
            return NotImplemented
        assert isinstance(x, Tensor)

        def compute(t: Tensor, _weight: Tensor | None, _bias: Tensor | None) -> Tensor:
            return func(t, *args, **kwargs)

        output = compute(x.detach(), None, None)
        return _Relevance.apply(x, output, _Call(compute, None, None, EPSILON, epsilon))

    def addition(a: object, b: object, *args: object, **kwargs: object) -> object:
        plain = args or set(kwargs) - {"alpha"} or kwargs.get("alpha", 1) != 1
        if plain or not isinstance(a, Tensor) or not isinstance(b, Tensor) or not (_tracked(a) or _tracked(b)):
            return NotImplemented
        if p.is_attention(a) or p.is_attention(b):
            return NotImplemented
        if not p.biases and not (_tracked(a) and _tracked(b)):
            # A constant summand (a position embedding) is a bias: left out, the other summand keeps everything.
            x = a if _tracked(a) else b
            return _PassThrough.apply(x, a.detach() + b.detach())
        # In-place forms (out += identity) return a new tensor: Python rebinds the name to it.
        return _Split.apply(a, b, epsilon, p.absorb)

    def subtraction(a: object, b: object, *args: object, **kwargs: object) -> object:
        if args or kwargs or not isinstance(a, Tensor) or not isinstance(b, Tensor) or not (_tracked(a) or _tracked(b)):
            return NotImplemented
        # a + (-b); the negation passes relevance on unchanged (the epsilon rule on z = -b).
        return addition(a, _PassThrough.apply(b, -b.detach()) if _tracked(b) else -b)

    table: dict[Callable[..., object], Callable[..., object]] = function_rules(p)
    for func in ACTIVATIONS:
        table[func] = partial(activation, func)
    for func in POOLINGS:
        table[func] = partial(pooling, func)
    for func in ADDITIONS:
        table[func] = addition
    for func in SUBTRACTIONS:
        table[func] = subtraction
    return table


def _module_name(names: dict[nn.Module, str], module: nn.Module) -> str:
    name = names.get(module, "")
    return f"{name} ({type(module).__name__})" if name else f"the model's own forward ({type(module).__name__})"


# One forward pass with the rules in place ---------------------------------------------------------------------

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLAIN_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RULES = ("epsilon", "gamma", "alpha_beta")
_FIRST_RULES = ("zbox", "flat", "wsquare", None)


def _linear(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    assert weight is not None
    return F.linear(x, weight, bias)


def _reads_inputs(tensor: Tensor, inputs: Tensor) -> bool:
    """Whether ``tensor`` is computed from ``inputs`` without passing through a Conv/Linear layer."""
    if tensor is inputs:
        return True
    found, seen, stack = False, set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, _Relevance._backward_cls) and node.call.weight is not None:  # type: ignore[attr-defined]
            return False
        if getattr(node, "variable", None) is inputs:
            found = True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _batch_norm_affine(norm: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """BatchNorm as ``x * scale + shift`` per channel, with the statistics the forward pass used."""
    assert isinstance(norm, _NORMS)
    if norm.training or norm.running_mean is None or norm.running_var is None:
        dims = [0, *range(2, x.ndim)]
        mean, var = x.detach().mean(dims), x.detach().var(dims, unbiased=False)
    else:
        mean, var = norm.running_mean.to(x.dtype), norm.running_var.to(x.dtype)
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().to(x.dtype)
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().to(x.dtype)
    return scale, shift


@dataclass(eq=False)
class _Propagation:
    """The hooks' shared state during one forward pass."""

    inputs: Tensor
    rule: Rule
    first_rule: Rule | None
    epsilon: float
    # The epsilon rule as poolings and BatchNorms that are not folded use it (without biases if the rules are).
    affine_rule: Rule
    low: float | Tensor | None
    high: float | Tensor | None
    # Outputs of Conv/Linear calls not yet consumed, by id, for BatchNorm folding.
    pending: dict[int, tuple[Tensor, _Call]] = field(default_factory=dict)
    layers: int = 0
    first_layers: int = 0
    folded: int = 0
    recomputing: bool = False
    biases: bool = True
    # Functions with no rule that relevance reached: what -> {where (module name and type): order in the forward}.
    unruled: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: int = 0
    # The modules running now, innermost last, and every module's name: where a function without a rule ran.
    running: list[nn.Module] = field(default_factory=list)
    names: dict[nn.Module, str] = field(default_factory=dict)
    # Softmax outputs (attention weights) by id, held so that ids stay unique during the forward pass.
    attention: dict[int, Tensor] = field(default_factory=dict)
    # Per input, the relevance that reached constants (a class token, a position embedding), float64.
    constants: Tensor | None = None

    def attach(self, hooks: probe.Hooks, model: nn.Module) -> None:
        for name, module in model.named_modules():
            self.names.setdefault(module, name)
            hooks.add(module.register_forward_pre_hook(self.enter))
            hooks.add(module.register_forward_hook(self.leave))
        for module in model.modules():
            if isinstance(module, (*_CONVS, nn.Linear)):
                channels_first = isinstance(module, _CONVS)
                if type(module).forward in _PLAIN_FORWARDS:
                    compute = module._conv_forward if channels_first else _linear  # type: ignore[operator]
                else:
                    # A subclass with its own forward (TensorFlow-style "SAME" padding, weight standardisation):
                    # recompute through that forward, with the rule's parameters swapped in.
                    compute = partial(self.own_forward, module)
                hook = partial(self.layer, compute=compute, channels_first=channels_first)
                hooks.add(module.register_forward_hook(hook))
            elif isinstance(module, _NORMS):
                hooks.add(module.register_forward_hook(self.batch_norm))

    def enter(self, module: nn.Module, _args: object) -> None:
        self.running.append(module)

    def leave(self, module: nn.Module, _args: object, _output: object) -> None:
        if self.running and self.running[-1] is module:
            self.running.pop()

    def in_ruled_module(self) -> bool:
        """Whether the innermost running module is one whose forward hook applies a rule to its output."""
        return bool(self.running) and isinstance(self.running[-1], (*_CONVS, nn.Linear, *_NORMS))

    def unruled_note(self, what: str) -> Callable[[], None]:
        """A callback recording that relevance reached ``what``, called in the module running now."""
        where = _module_name(self.names, self.running[-1]) if self.running else "the model"
        order = self.notes
        self.notes += 1

        def reached() -> None:
            self.unruled.setdefault(what, {}).setdefault(where, order)

        return reached

    def live(self, t: object) -> bool:
        """Whether ``t`` carries relevance: it depends on the inputs and is not a softmax's attention weights."""
        return _tracked(t) and not self.is_attention(t)

    def is_attention(self, t: object) -> bool:
        return isinstance(t, Tensor) and self.attention.get(id(t)) is t

    def attention_weights(self, t: Tensor) -> Tensor:
        self.attention[id(t)] = t
        return t

    def absorb(self, relevance: Tensor) -> None:
        """Record relevance that reached a constant; summed per input when its first axis is the batch."""
        batch = self.inputs.shape[0]
        total = relevance.detach().double()
        per_input = total.reshape(batch, -1).sum(1) if total.ndim and total.shape[0] == batch else None
        if per_input is None:
            per_input = total.sum().expand(batch) / batch
        self.constants = per_input if self.constants is None else self.constants + per_input

    def affine(
        self, x: Tensor, output: Tensor, compute: Callable[..., Tensor], weight: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        """``output = compute(x, weight, bias)``, a linear map of ``x`` (a normalisation held constant), under the
        epsilon rule (without its bias if the rules are)."""
        weight, bias = (None if t is None else t.detach() for t in (weight, bias))
        return _Relevance.apply(x, output.detach(), _Call(compute, weight, bias, self.affine_rule, self.epsilon))

    def linear_layer(
        self,
        x: Tensor,
        output: Tensor,
        compute: Callable[..., Tensor],
        weight: Tensor,
        bias: Tensor | None,
        channels_first: bool = False,
    ) -> Tensor:
        """``output = compute(x, weight, bias)`` of a Conv/Linear layer (a module's call, or a functional one such
        as attention's projections) under the layers' rule, or ``first_rule`` if it reads the inputs."""
        first = self.first_rule is not None and _reads_inputs(x, self.inputs)
        rule = self.first_rule if first and self.first_rule is not None else self.rule
        detached = None if bias is None else bias.detach()
        call = _Call(compute, weight.detach(), detached, rule, self.epsilon, channels_first or output.ndim == 2)
        if rule.name == ZBOX.name:
            call.low, call.high = self.bound(self.low, x, low=True), self.bound(self.high, x, low=False)
        result = _Relevance.apply(x, output.detach(), call)
        self.pending[id(result)] = (result, call)
        self.layers += 1
        self.first_layers += first
        return result

    def own_forward(self, module: nn.Module, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """``module``'s own forward with ``weight``/``bias`` in place of its parameters; our hooks stand aside."""
        self.recomputing = True
        try:
            return torch.func.functional_call(module, {"weight": weight, "bias": bias}, (x,))
        finally:
            self.recomputing = False

    def layer(
        self,
        module: nn.Module,
        args: tuple[object, ...],
        output: object,
        compute: Callable[..., Tensor],
        channels_first: bool,
    ) -> Tensor | None:
        x = args[0] if args else None
        if self.recomputing or not isinstance(x, Tensor) or not _tracked(x) or not isinstance(output, Tensor):
            return None
        assert isinstance(module, (*_CONVS, nn.Linear))
        return self.linear_layer(x, output, compute, module.weight, module.bias, channels_first)

    def batch_norm(self, module: nn.Module, args: tuple[object, ...], output: object) -> Tensor | None:
        x = args[0] if args else None
        if not isinstance(x, Tensor) or not _tracked(x) or not isinstance(output, Tensor):
            return None
        scale, shift = _batch_norm_affine(module, x)
        produced, call = self.pending.pop(id(x), (None, None))
        if produced is x and call is not None and call.weight is not None and self.foldable(call, scale):
            shape = (-1,) + (1,) * (call.weight.ndim - 1)
            call.weight = call.weight * scale.view(shape)
            call.bias = shift if call.bias is None else call.bias * scale + shift
            self.folded += 1
            return _PassThrough.apply(x, output.detach())
        # Not directly after a Conv/Linear: an element-wise affine map, under the epsilon rule.
        view = (1, -1) + (1,) * (x.ndim - 2)

        def affine(t: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
            assert weight is not None
            return t * weight.view(view) + (0 if bias is None else bias.view(view))

        call = _Call(affine, scale, shift, self.affine_rule, self.epsilon)
        return _Relevance.apply(x, output.detach(), call)

    @staticmethod
    def foldable(call: _Call, scale: Tensor) -> bool:
        return call.channels_first and call.weight is not None and call.weight.shape[0] == scale.numel()

    def bound(self, value: float | Tensor | None, x: Tensor, low: bool) -> Tensor:
        """The z-box bound for the first layer's input ``x``: given, or the per-input minimum/maximum."""
        if value is None:
            flat = x.detach().flatten(1)
            extreme = flat.amin(dim=1) if low else flat.amax(dim=1)
            return extreme.view(-1, *(1,) * (x.ndim - 1))
        bound = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        if bound.ndim == 0:
            return bound
        bound = torch.broadcast_to(bound, self.inputs.shape)
        if bound.shape == x.shape:
            return bound
        if bound.numel() == x.numel():
            # The first layer reads a reshaped view of the inputs (an MLP after Flatten).
            return bound.reshape(x.shape)
        raise BadInputError(
            f"low/high of shape {tuple(bound.shape)} cannot be matched to the first layer's input "
            f"{tuple(x.shape)}; pass numbers instead."
        )


def absorbed(relevance: Tensor, scores: Tensor) -> Tensor:
    """Per input, the share of the target's score that did not reach the inputs: ``1 - sum(R) / score``.

    Biases (each keeps ``b_k / z_k`` of its neuron's relevance) and ``epsilon`` absorb it; the alpha-beta rule and
    operations without a rule change it too, so it can be negative. NaN where the score is 0.
    """
    total = relevance.detach().flatten(1).double().sum(dim=1)
    score = scores.detach().double()
    share = 1.0 - total / torch.where(score == 0, torch.ones_like(score), score)
    return torch.where(score == 0, torch.full_like(share, float("nan")), share).float()


def _refusal(unruled: dict[str, dict[str, int]]) -> str:
    """The error for functions without a rule that relevance reached: each with the modules it ran in, in the
    order of the forward pass (three shown)."""
    parts = []
    for what, places in sorted(unruled.items(), key=lambda item: min(item[1].values())):
        wheres = sorted(places, key=places.__getitem__)
        more = f" and {len(wheres) - 3} more" if len(wheres) > 3 else ""
        parts.append(f"{what} in {', '.join(wheres[:3])}{more}")
    many = len(parts) > 1 or any(len(places) > 1 for places in unruled.values())
    return (
        f"lrp has no rule for {'; '.join(parts)}: relevance would cross "
        f"{'them' if many else 'it'} as a plain gradient, so it would not be conserved (the sum of the "
        "attribution could be off by orders of magnitude). LRP has rules for Conv/Linear/BatchNorm networks with "
        "element-wise activations, poolings and residual additions (VGG, ResNet, DenseNet, ...) and, by conservative "
        "propagation, for transformers: LayerNorm/GroupNorm/RMSNorm, attention (nn.MultiheadAttention, "
        "F.scaled_dot_product_attention, softmax(q k^T) @ v), GELU, products with constants (ViT, DeiT, Swin, "
        "ConvNeXt from torchvision, timm or Hugging Face). Products of two tensors that both depend on the inputs "
        "(gates, squeeze-and-excitation), softmax outside attention (explain the logits instead) and other functions "
        "have none: explain this model with a gradient method ('input_x_gradient', 'integrated_gradients', ...) "
        "or occlusion."
    )


# The method ------------------------------------------------------------------------------------------------


@register("lrp")
class LRP(Method):
    """Layer-wise relevance propagation: the target's logit redistributed, layer by layer, onto the inputs.

    ``attribution`` is the relevance of each input element (it sums to the target's score, up to epsilon, when
    the network has no biases or ``biases=False``); ``heatmap`` its channel sum (``reduce='sum'``).

    Options (defaults):
        rule ('epsilon'): the rule of every Conv/Linear layer (a BatchNorm directly after one is folded into
            it). 'epsilon': ``z + epsilon * sign(z)``; 'gamma': weights ``w + gamma * w+``; 'alpha_beta':
            ``alpha * positive - (alpha - 1) * negative`` contributions (it conserves relevance only where a
            neuron has contributions of both signs).
        epsilon (1e-6): the stabiliser added, with z's sign, to every denominator (and the epsilon rule's
            epsilon). Poolings, additions and BatchNorms not folded use the epsilon rule with it.
        gamma (0.25): the gamma rule's weight of positive contributions.
        alpha (2.0): the alpha-beta rule's alpha (beta = alpha - 1; alpha=1 is the DeepTaylor alpha1-beta0).
        first_rule ('zbox'): the rule of the Conv/Linear layers that read the inputs without passing through
            another one: 'zbox' (the DeepTaylor choice for bounded inputs such as pixels), 'flat', 'wsquare',
            or None for ``rule``.
        low, high (None): the z-box bounds of the inputs, numbers or tensors broadcastable to the inputs
            (e.g. per channel, ``[1, C, 1, 1]``); by default each input's own minimum and maximum.
        biases (True): whether the rules include the layers' biases (folded BatchNorm shifts included). With
            biases, each layer keeps a bias's share of the relevance, so ``attribution`` sums to less (or more)
            than the score; False leaves them out of every rule's ``z``, so relevance is conserved up to epsilon
            (the attribution sums to the score) at the price of explaining ``z`` without its bias.
        reduce ('sum'): how channels become the heatmap.

    The explanation's ``extras["absorbed"]`` is ``1 - sum(attribution) / score`` per input: the share of the
    score the biases (and epsilon) absorbed, measured.

    Relevance passes element-wise activations unchanged, is split in proportion to the summands at every
    ``a + b`` (so it is conserved through residual connections), goes to the winner in max pooling and in
    proportion to the inputs in average pooling (``mean`` included). Transformers are explained by conservative
    propagation (Ali et al. 2022): LayerNorm's normalisation and attention's softmax weights are held constant,
    the epsilon rule applies to the linear map that is left; relevance reaching a class token or position
    embedding is reported as ``extras["constants"]``. A function without a rule that relevance would reach (a
    product of two tensors that both depend on the inputs, a softmax outside attention, ...) is refused with a
    BadInputError naming it and its module.
    """

    needs_module = True  # hooks every layer to apply its rule
    single_input_only = "its first-layer rule and z-box bounds start from one input tensor"
    blank_causes = (
        "relevance absorbed by the epsilon stabiliser or the biases (try biases=False), or a dead or zero head"
    )

    options: ClassVar[Mapping[str, Any]] = {
        "rule": "epsilon",
        "epsilon": 1e-6,
        "gamma": 0.25,
        "alpha": 2.0,
        "first_rule": "zbox",
        "low": None,
        "high": None,
        "biases": True,
        "reduce": "sum",
    }

    def attribute(self) -> Result:
        from .lrp_functions import otherwise, watch_custom_functions  # they build on this module's functions

        propagation = self.propagation()
        x = propagation.inputs
        with probe.preserved(self.model), probe.Hooks() as hooks, torch.enable_grad():
            # Frozen parameters: a tensor requires grad exactly when it depends on the inputs, so rules can tell
            # the inputs' features from constants (a class token, a position embedding, attention weights' inputs).
            for param in self.model.parameters():
                param.requires_grad_(False)
            propagation.attach(hooks, self.model)
            with probe.rewrite(_rewrites(propagation), otherwise(propagation)):
                scores, _ = self.forward(x)
            self.scores = scores.detach()
            if not scores.requires_grad:
                raise BadInputError(
                    "the target's score does not depend on the inputs (no graph reaches them), so there is no "
                    "relevance to propagate."
                )
            watch_custom_functions(scores, propagation)
            # Outside the rewrite: the rules' own arithmetic must run unmodified.
            (relevance,) = torch.autograd.grad(scores, x, grad_outputs=scores.detach(), allow_unused=True)
        if propagation.unruled:
            raise BadInputError(_refusal(propagation.unruled))
        if propagation.layers == 0:
            warnings.warn(
                "lrp: the forward pass ran no Conv/Linear layer on the inputs, so no rule applied.", stacklevel=3
            )
        elif propagation.first_rule is not None and propagation.first_layers == 0:
            warnings.warn(
                f"lrp: no Conv/Linear layer reads the inputs directly, so first_rule={propagation.first_rule.name!r} "
                "applied nowhere (operations before the first layer pass relevance as a plain gradient).",
                stacklevel=3,
            )
        if relevance is None:
            relevance = torch.zeros_like(x)
        extras = {"absorbed": absorbed(relevance.detach(), self.scores)}
        if propagation.constants is not None:
            score = self.scores.detach().double()
            extras["constants"] = (propagation.constants / torch.where(score == 0, 1.0, score)).float()
        return Result(attribution=relevance.detach(), extras=extras)

    def propagation(self) -> _Propagation:
        """The validated options as the state of one propagation."""
        opts = self.opts
        epsilon, gamma, alpha = (self.number(name) for name in ("epsilon", "gamma", "alpha"))
        if epsilon < 0 or gamma < 0:
            raise BadInputError(f"epsilon and gamma must be >= 0; got epsilon={epsilon}, gamma={gamma}.")
        if alpha < 1:
            raise BadInputError(f"alpha must be >= 1 (beta = alpha - 1 >= 0); got alpha={alpha}.")
        name = opts["rule"]
        if name not in _RULES:
            near = close_names(str(name), _RULES)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise BadInputError(f"rule={name!r} is not one of {', '.join(map(repr, _RULES))}.{hint}")
        rule = {"epsilon": EPSILON, "gamma": gamma_rule(gamma), "alpha_beta": alpha_beta_rule(alpha)}[name]
        first = opts["first_rule"]
        if first not in _FIRST_RULES:
            raise BadInputError(f"first_rule={first!r} is not one of {', '.join(map(repr, _FIRST_RULES))}.")
        first_rule = {"zbox": ZBOX, "flat": FLAT, "wsquare": WSQUARE, None: None}[first]
        biases = opts["biases"]
        if not isinstance(biases, bool):
            raise BadInputError(
                f"biases must be True (the rules include the biases, which absorb relevance) or False (the rules "
                f"leave them out, so relevance is conserved); got {biases!r}."
            )
        affine_rule = EPSILON
        if not biases:
            rule, affine_rule = without_biases(rule), without_biases(EPSILON)
            first_rule = None if first_rule is None else without_biases(first_rule)
        low, high = self.bounds()
        x = self.inputs.detach().requires_grad_(True)
        return _Propagation(x, rule, first_rule, epsilon, affine_rule, low, high, biases=biases)

    def number(self, name: str) -> float:
        value = self.opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(f"{name} must be a number, not {value!r}.")
        return float(value)

    def bounds(self) -> tuple[float | Tensor | None, float | Tensor | None]:
        """``low``/``high`` checked against the inputs: broadcastable, ``low <= high``; a warning if exceeded."""
        x = self.inputs
        values: list[float | Tensor | None] = []
        for name in ("low", "high"):
            value = self.opts[name]
            if value is None:
                values.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
                raise BadInputError(f"{name} must be None, a number or a tensor, not {type(value).__name__}.")
            if isinstance(value, Tensor):
                try:
                    torch.broadcast_shapes(value.shape, x.shape)
                except RuntimeError:
                    raise BadInputError(
                        f"{name} of shape {tuple(value.shape)} does not broadcast to the inputs {tuple(x.shape)}; "
                        "use e.g. [1, C, 1, 1] for per-channel bounds."
                    ) from None
                value = value.detach().to(x)
            values.append(value)
        low, high = values
        low_t = x.detach().amin() if low is None else torch.as_tensor(low).to(x)
        high_t = x.detach().amax() if high is None else torch.as_tensor(high).to(x)
        if low is not None and high is not None and bool((low_t > high_t).any()):
            raise BadInputError("low must not exceed high (they bound the inputs for the z-box rule).")
        if self.opts["first_rule"] == "zbox" and bool(((x < low_t) | (x > high_t)).any()):
            warnings.warn(
                "lrp: some inputs lie outside [low, high]; the z-box rule assumes low <= x <= high and may give "
                "relevance of the wrong sign there.",
                stacklevel=5,
            )
        return low, high
