"""DeepLift (rescale rule) and GradientSHAP, Captum's two reference-based gradient methods.

DeepLift runs the inputs and their baselines through the model in one batch (inputs first, baselines after) and
backpropagates through every non-linearity with the rescale rule: the multiplier ``(f(x) - f(x0)) / (x - x0)``
of the difference between the two halves in place of the derivative ``f'(x)`` (the derivative where the input
barely changes, ``|x - x0| < 1e-10``, as in Captum). The rule reaches ``nn.ReLU``-like modules and the functional
calls (``F.relu``, ``torch.sigmoid``, ``F.gelu``, ``x.clamp(max=6)``, ...) alike, through
:func:`deepscope.probe.rewrite`, the mechanism guided backprop and LRP use; max poolings take Captum's max-pool
rule (the change of the window's maximum split between where the input's and the baseline's maxima are). Linear
layers, convolutions, batch norm in eval mode, additions and average poolings need no rule, so on a network built
of them and the rule's functions the attributions sum to ``f(x) - f(baseline)`` (summation-to-delta);
``extras["delta"]`` reports the gap, as Captum's convergence delta (products of two activations, attention, break
it). A softmax over a classifier's classes (``nn.Softmax`` or ``F.softmax`` on ``[N, classes]``) takes Captum's
softmax rule: the rescale multipliers, minus their mean over the classes.

With a ``layer`` both methods attribute to that layer's output (Captum's ``LayerDeepLift`` and
``LayerGradientShap``): DeepLift's multipliers are then those of the layer's output, and summation-to-delta holds
at a layer that cuts the network (every path from the inputs to the output passes through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import probe
from ..errors import BadInputError
from .base import Result, defaults, is_integer, register
from .gradients import GradientMethod, at_layer, id_baseline, input_baselines

# Where the input barely changes, the multiplier is the derivative (Captum's eps).
EPS = 1e-10

# Element-wise non-linearities the rescale rule replaces (in-place variants run out of place, on a copy).
ELEMENTWISE: tuple[Callable[..., object], ...] = (
    *probe.RELU_FUNCTIONS,
    F.relu6,
    F.elu,
    F.elu_,
    F.selu,
    F.celu,
    F.leaky_relu,
    F.leaky_relu_,
    F.hardtanh,
    F.hardtanh_,
    F.softplus,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.logsigmoid,
    torch.sigmoid,
    torch.sigmoid_,
    Tensor.sigmoid,
    Tensor.sigmoid_,
    torch.tanh,
    torch.tanh_,
    Tensor.tanh,
    Tensor.tanh_,
    F.tanh,
    F.sigmoid,
    torch.clamp,
    torch.clamp_,
    torch.clip,
    torch.clamp_min,
    torch.clamp_max,
    Tensor.clamp,
    Tensor.clamp_,
    Tensor.clip,
    Tensor.clamp_min,
    Tensor.clamp_max,
)
MAX_POOLS: tuple[Callable[..., object], ...] = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
SOFTMAXES: tuple[Callable[..., object], ...] = (F.softmax, torch.softmax, Tensor.softmax)


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


class _Rescale(torch.autograd.Function):
    """An element-wise function whose backward multiplies by ``(f(x) - f(x0)) / (x - x0)`` (rows: inputs, then
    their baselines), or by the derivative where ``|x - x0| < eps``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, output: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x, output)
        ctx.compute = compute
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        x, output = ctx.saved_tensors
        x_in, x_ref = _halves(x.float())
        y_in, y_ref = _halves(output.float())
        delta = torch.cat([x_in - x_ref] * 2)
        small = delta.abs() < EPS
        multiplier = torch.cat([y_in - y_ref] * 2) / torch.where(small, torch.ones_like(delta), delta)
        result = grad.float() * multiplier
        if bool(small.any()):
            result = torch.where(small, _plain_gradient(ctx.compute, x, grad).float(), result)
        return result.to(grad.dtype), None, None


class _RescaleSoftmax(_Rescale):
    """A softmax over the classes (axis 1 of ``[rows, classes]``) with Captum's DeepLift rule: each class's rescale
    multiplier ``(s(x) - s(x0)) / (x - x0)`` of its own logit (the derivative where ``|x - x0| < eps``), minus the
    mean over the classes. Captum takes that mean over the whole batch, inputs and baselines; here it is each
    input's own, so an input's attribution does not depend on the others in its batch (Captum's numbers for an
    input explained alone)."""

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        multiplied, _, _ = _Rescale.backward(ctx, grad)
        multiplied = multiplied.float()
        return (multiplied - multiplied.mean(dim=1, keepdim=True)).to(grad.dtype), None, None


class _RescaleMaxPool(torch.autograd.Function):
    """A max pooling with Captum's DeepLift rule: the change of each window's maximum, ``max(y, y0) - y0`` going
    to where the input's maximum is and ``y - max(y, y0)`` to where the baseline's is, divided by ``x - x0``.
    Overlapping windows add up (Captum's unpooling overwrites them, losing part of the change)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, output: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.compute = compute
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        x_in, x_ref = (part.detach().float().requires_grad_(True) for part in _halves(x))
        g = _halves(grad.float())[0]
        with torch.enable_grad():
            y_in, y_ref = ctx.compute(x_in), ctx.compute(x_ref)
            top = torch.maximum(y_in, y_ref).detach()
            # Each pooling's backward puts a window's value where its maximum is, adding up across windows.
            (at_input,) = torch.autograd.grad(y_in, x_in, g * (top - y_ref.detach()), retain_graph=True)
            (at_reference,) = torch.autograd.grad(y_ref, x_ref, g * (y_in.detach() - top))
            (plain,) = torch.autograd.grad(y_in, x_in, g)
        delta = (x_in - x_ref).detach()
        small = delta.abs() < EPS
        result = torch.where(small, plain, (at_input + at_reference) / torch.where(small, 1.0, delta))
        return torch.cat([result, torch.zeros_like(result)]).to(grad.dtype), None, None


def _plain_gradient(compute: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (plain,) = torch.autograd.grad(compute(leaf.clone()), leaf, grad)
    return plain


def rescale_rewrites(rows: int) -> dict[Callable[..., object], Callable[..., object]]:
    """The replacements of :func:`deepscope.probe.rewrite` that give DeepLift's rule to every non-linearity of a
    forward pass over ``rows`` rows (inputs, then as many baselines); tensors of another batch size, and those
    outside the graph, keep the plain gradient."""

    def applies(x: object) -> bool:
        return isinstance(x, Tensor) and x.requires_grad and x.ndim > 0 and x.shape[0] == rows

    def rule(func: Callable[..., Any], function: type[torch.autograd.Function]) -> Callable[..., object]:
        def call(x: object, *args: object, **kwargs: object) -> object:
            if not applies(x) or kwargs.get("return_indices") or (function is _RescaleMaxPool and len(args) > 5):
                return NotImplemented

            def compute(t: Tensor) -> Tensor:
                return func(t, *args, **kwargs)

            assert isinstance(x, Tensor)
            with torch.no_grad():
                output = compute(x.detach().clone())  # on a copy: in-place variants leave the graph intact
            return function.apply(x, output, compute)

        return call

    def softmax(func: Callable[..., Any]) -> Callable[..., object]:
        over_classes = rule(func, _RescaleSoftmax)

        def call(x: object, *args: object, **kwargs: object) -> object:
            dim = kwargs.get("dim", args[0] if args else None)
            # Only a classifier's softmax over its classes; attention's ([N, heads, T, T]) keeps its gradient.
            if not isinstance(x, Tensor) or x.ndim != 2 or dim not in (None, 1, -1):
                return NotImplemented
            return over_classes(x, *args, **kwargs)

        return call

    replacements = {func: rule(func, _Rescale) for func in ELEMENTWISE}
    replacements.update({func: rule(func, _RescaleMaxPool) for func in MAX_POOLS})
    replacements.update({func: softmax(func) for func in SOFTMAXES})
    return replacements


@register("deeplift")
class DeepLift(GradientMethod):
    """Shrikumar et al. 2017, the rescale rule (Captum's ``DeepLift``): (x - baseline) times the multipliers.

    The inputs and the ``baseline`` go through the model in one batch; every ReLU, sigmoid, tanh, GELU, ... (as a
    module or a functional call) backpropagates the ratio of its output's change to its input's change, max
    poolings Captum's max-pool rule, and a softmax over the classes Captum's softmax rule (the multipliers minus
    their mean over the classes). On networks of such layers (without the softmax) the attributions sum to f(x) -
    f(baseline) (summation-to-delta); the gap is ``extras["delta"]``. ``multiply_by_inputs=False`` returns the
    multipliers themselves (Captum's switch). Heatmap: the channel sum.

    With a ``layer`` (Captum's ``LayerDeepLift``): the layer's output on the inputs minus its output on the
    baseline, times the multipliers of that output; the sum is f(x) - f(baseline) where the network above the
    layer is built of the rule's layers. For token ids the ``baseline`` is a token id or a tensor of ids (as
    integrated gradients'), or a float tensor in the layer's output shape (the layer's output on the baseline).
    """

    options = defaults(baseline=0.0, multiply_by_inputs=True, reduce="sum")

    def attribute(self) -> Result:
        multiply = self.opts["multiply_by_inputs"]
        if not isinstance(multiply, bool):
            raise BadInputError(f"multiply_by_inputs={multiply!r} must be True or False.")
        x = self.inputs
        if self.target.needs_prediction and self.target.predicted is None:
            self.clean_scores()
        n = x.shape[0]
        batch, at = self.batch(x)
        multipliers, scores, points = self.multipliers(batch, at)
        if self.scores is None:
            self.scores = scores[:n]
        difference = (points[:n] - points[n:]).float()
        change = (scores[:n] - scores[n:]).double()
        delta = (difference * multipliers).reshape(n, -1).double().sum(dim=1) - change
        attribution = difference * multipliers if multiply else multipliers
        return Result(attribution=attribution, extras={"delta": delta.float()})

    def batch(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The batch of the inputs and their baselines (rows ``2n``), and with a float baseline for token ids at
        a layer, the layer's outputs to put in its place (the inputs' own, then the baseline)."""
        baseline = self.opts["baseline"]
        if self.layer is not None and is_integer(x):
            if isinstance(baseline, Tensor) and baseline.is_floating_point():  # already at the layer
                end = self.layer_output(x)
                return torch.cat([x, x]), torch.cat([end, at_layer(baseline, end, self.layer)])
            return torch.cat([x, id_baseline(baseline, x)]), None
        return torch.cat([x, input_baselines(baseline, x, self.layout).to(x.dtype)]), None

    def multipliers(self, batch: Tensor, at: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The multipliers ``[n, ...]`` of the inputs (with a layer: of its output) with respect to the baselines,
        the scores of the batch (inputs, then baselines), and the points the multipliers are of (the batch, or the
        layer's outputs on it)."""
        n = batch.shape[0] // 2
        with probe.rewrite(rescale_rewrites(2 * n)):
            if self.layer is None:
                leaf = batch.detach().requires_grad_(True)
                with torch.enable_grad():
                    scores, _ = self.forward(leaf)
            else:
                scores, leaf = self.layer_forward(batch, at)
        # Outside the rewrite: the rules' own backward arithmetic runs unmodified.
        (grad,) = torch.autograd.grad(scores[:n].sum(), leaf)
        return grad[:n].float(), scores.detach(), leaf.detach()


@register("gradient_shap")
class GradientShap(GradientMethod):
    """Lundberg & Lee 2017 (Captum's ``GradientShap``): the expected gradient times (input - baseline), over
    baselines drawn at random from a set, points drawn uniformly on the path between the two, and optional noise.

    ``baseline`` is the set of reference inputs: a tensor ``[B, C, H, W]`` (any ``B``; each sample draws one), or
    one baseline for all (a number, "mean", "blur" or a tensor without the batch axis). Each of ``samples`` draws a
    baseline ``b``, a point ``t`` in [0, 1] and Gaussian noise (``noise``, a fraction of each input's value range;
    0 by default as in Captum), all shared by the inputs of the batch, and adds ``(x + noise - b) * grad(b + t (x +
    noise - b))``; the mean is the attribution. In expectation the attributions sum to f(x) - E[f(b)] (SHAP's
    efficiency). ``multiply_by_inputs=False`` averages the gradients alone. Heatmap: the channel sum.

    With a ``layer`` (Captum's ``LayerGradientShap``): the baselines, the points and the noise are drawn in the
    inputs' space as without it, and each sample adds the layer's output on the noisy input minus its output on
    the baseline, times the gradient at the layer's output on the point. So the inputs must be numbers; for token
    ids use ``integrated_gradients`` or ``deeplift`` at the layer.
    """

    options = defaults(
        baseline=0.0, samples=5, noise=0.0, multiply_by_inputs=True, batch_size=64, seed=None, reduce="sum"
    )

    def attribute(self) -> Result:
        samples, batch_size = self.count("samples"), self.count("batch_size")
        multiply = self.opts["multiply_by_inputs"]
        if not isinstance(multiply, bool):
            raise BadInputError(f"multiply_by_inputs={multiply!r} must be True or False.")
        x = self.inputs
        if is_integer(x):
            raise BadInputError(
                f"gradient_shap with layer={self.layer!r} draws points between the inputs and the baselines (as "
                f"Captum's LayerGradientShap), and these inputs are integers ({x.dtype}: token ids?); use "
                "integrated_gradients or deeplift at the layer, which take token ids."
            )
        self.clean_scores()
        n = x.shape[0]
        references, own = self.references()
        sigma = self.noise_scale()
        generator = self.generator(x.device)
        total: Tensor | None = None
        per_chunk = max(1, batch_size // n)
        shape = (-1, 1) + (1,) * (x.ndim - 1)
        # At a layer: its outputs on the inputs and on their own baselines do not change from sample to sample.
        fixed_end = self.point(x) if self.layer is not None and sigma is None else None
        fixed_start = self.point(own) if self.layer is not None and references is None else None
        for start in range(0, samples, per_chunk):
            k = min(per_chunk, samples - start)
            # Drawn once per sample for the whole batch: an input's result does not depend on the others.
            alpha = torch.rand(k, generator=generator, device=x.device).to(x.dtype).view(shape)
            if references is not None:
                index = torch.randint(references.shape[0], (k,), generator=generator, device=x.device)
                base = references[index].unsqueeze(1)
            else:
                base = own.unsqueeze(0)
            noisy = x.unsqueeze(0)
            if sigma is not None:
                noise = torch.randn((k, *x.shape[1:]), generator=generator, device=x.device).to(x.dtype)
                noisy = noisy + noise.unsqueeze(1) * sigma.unsqueeze(0)
            difference = (noisy - base).expand(k, *x.shape)
            point = (base + alpha * difference).reshape(k * n, *x.shape[1:])
            grads = self.gradient(point)
            grads = grads.reshape(k, n, *grads.shape[1:]).float()
            if self.layer is not None:  # the difference of the layer's outputs, row by row
                end = fixed_end if fixed_end is not None else self.rows_at_layer(noisy.expand(k, *x.shape))
                begin = fixed_start if fixed_start is not None else self.rows_at_layer(base.expand(k, *x.shape))
                layer_shape = (-1, n, *grads.shape[2:])
                difference = (end.reshape(layer_shape) - begin.reshape(layer_shape)).expand_as(grads)
            part = (difference.float() * grads if multiply else grads).sum(dim=0)
            total = part if total is None else total + part
        assert total is not None
        return Result(attribution=total / samples)

    def rows_at_layer(self, rows: Tensor) -> Tensor:
        """The layer's output on ``rows`` ``[k, n, ...]`` (k variants of each input), as ``[k * n, ...]``."""
        return self.point(rows.reshape(-1, *rows.shape[2:]))

    def references(self) -> tuple[Tensor | None, Tensor]:
        """The set of baselines ``[B, ...]`` packed like the inputs, or None and one baseline per input."""
        x = self.inputs
        parts = self.layout.parts(x)
        options = self.layout.each(self.opts["baseline"], "baseline")
        sets = [isinstance(o, Tensor) and o.ndim == p.ndim for o, p in zip(options, parts, strict=True)]
        if not any(sets):
            return None, input_baselines(self.opts["baseline"], x, self.layout)
        if not all(sets):
            raise BadInputError(
                "gradient_shap: give every input a set of baselines [B, ...] or none of them; a tuple mixing sets "
                "with single baselines has no common draw."
            )
        chosen: list[Tensor] = []
        for j, (option, part) in enumerate(zip(options, parts, strict=True)):
            assert isinstance(option, Tensor)
            if tuple(option.shape[1:]) != tuple(part.shape[1:]) or option.shape[0] < 1:
                raise BadInputError(
                    f"gradient_shap: the baselines of inputs[{j}] have shape {tuple(option.shape)}; a set of B "
                    f"baselines has shape (B, {', '.join(map(str, part.shape[1:]))})."
                )
            chosen.append(option.to(part))
        if len({c.shape[0] for c in chosen}) > 1:
            raise BadInputError("gradient_shap: the inputs' baseline sets differ in size B; give each input B rows.")
        return self.layout.pack(chosen), x

    def noise_scale(self) -> Tensor | None:
        """The noise's standard deviation per element (``noise`` times each input's value range), or None."""
        level = self.opts["noise"]
        if isinstance(level, bool) or not isinstance(level, (int, float)) or level < 0:
            raise BadInputError(f"noise={level!r} must be a number of at least 0 (a fraction of the value range).")
        if level == 0:
            return None
        x = self.inputs
        n = x.shape[0]

        def scale(_j: int, part: Tensor) -> Tensor:
            flat = part.reshape(n, -1)
            sigma = float(level) * (flat.amax(dim=1) - flat.amin(dim=1))
            return sigma.view((n,) + (1,) * (part.ndim - 1)).expand_as(part)

        return self.layout.map(scale, x)
