"""Modified backpropagation through ReLUs: guided backprop and deconvnet.

The rule reaches every ReLU of the forward pass, ``nn.ReLU`` modules and ``F.relu`` / ``torch.relu`` /
``Tensor.relu`` calls alike, through :func:`deepscope.probe.rewrite`; in-place ReLUs are run out of place.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .. import probe
from .base import Result, defaults, register
from .gradients import GradientMethod


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive (Springenberg 2015)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward is the ReLU of the backward signal, ignoring the forward mask (Zeiler & Fergus 2014)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class ReLURuleMethod(GradientMethod):
    """A gradient method that backpropagates through every ReLU with ``relu_rule`` instead."""

    relu_rule: type[torch.autograd.Function]
    options = defaults(reduce="max_abs")
    default_reduce = "max_abs"

    def gradient(self, inputs: Tensor, at: Tensor | None = None) -> Tensor:
        with probe.rewrite(probe.relu_rewrite(self.relu_rule.apply)) as mode:
            grad = super().gradient(inputs, at)
        if mode.calls == 0:
            warnings.warn(
                f"{self.name}: the forward pass called no ReLU, so the result equals the plain gradient.",
                stacklevel=4,
            )
        return grad

    def attribute(self) -> Result:
        return Result(attribution=self.gradient(self.inputs))


@register("guided_backprop")
class GuidedBackprop(ReLURuleMethod):
    """Springenberg et al. 2015: the gradient with only positive signals passed back through ReLUs.

    Heatmap: the maximum absolute value over channels; the attribution is the guided gradient itself.
    """

    relu_rule = _GuidedReLU


@register("deconvnet")
class Deconvnet(ReLURuleMethod):
    """Zeiler & Fergus 2014: backpropagation with the ReLU applied to the backward signal."""

    relu_rule = _DeconvReLU
