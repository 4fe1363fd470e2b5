"""The class activation map family: CAM, Grad-CAM, Grad-CAM++, Score-CAM, guided Grad-CAM.

Each method is the base class plus the one function that weighs a layer's channels (pytorch-grad-cam's good
idea). Gradients stop at the layer: the part of the network below it runs without building a graph, and no
parameter gradient is ever computed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError, TargetError
from .backprop import GuidedBackprop
from .base import Method, Result, defaults, register


def tokens_to_map(activation: Tensor) -> Tensor:
    """``(N, tokens, C)`` to ``(N, C, H, W)`` on a square grid, dropping a leading class token if there is one."""
    n, tokens, channels = activation.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        side = math.isqrt(tokens - 1)
        if side * side != tokens - 1:
            raise BadInputError(
                f"{tokens} tokens do not form a square grid (with or without one class token); pass "
                "reshape=<callable (N, tokens, C) -> (N, C, H, W)>."
            )
        activation = activation[:, 1:]
    return activation.reshape(n, side, side, channels).permute(0, 3, 1, 2)


class CAMMethod(Method):
    """Weighs the feature maps of ``layer`` into one map per input; subclasses say how (:meth:`cam`)."""

    uses_layer = True
    needs_module = True  # hooks the layer
    needs_spatial = True
    options = defaults(reshape=None, call=None)
    needs_gradient = True

    def attribute(self) -> Result:
        activations, grads = self.layer_signals()
        return Result(heatmap=self.cam(activations, grads))

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        """One map ``[N, h, w]`` at the layer's resolution from its activations (and their gradients)."""
        raise NotImplementedError

    def as_map(self, activation: Tensor) -> Tensor:
        """The layer's output as ``(N, C, *spatial)``, applying the ``reshape`` option to token outputs."""
        reshape = self.opts.get("reshape")
        if callable(reshape):
            return reshape(activation)
        if reshape is True:
            if activation.ndim != 3:
                raise BadInputError(
                    f"reshape=True expects a (N, tokens, C) output; layer {self.layer!r} gives "
                    f"{tuple(activation.shape)}."
                )
            return tokens_to_map(activation)
        if reshape not in (None, False):
            raise BadInputError(f"reshape={reshape!r} is not True, None or a callable.")
        if activation.ndim == 3 and self.image.ndim == 4:
            raise BadInputError(
                f"layer {self.layer!r} outputs {tuple(activation.shape)}: tokens (N, tokens, C), not a feature "
                "map, for image inputs. Pass reshape=True (square token grid, class token dropped) or "
                "reshape=<callable returning (N, C, H, W)>."
            )
        if activation.ndim < 3:
            raise BadInputError(
                f"layer {self.layer!r} outputs {tuple(activation.shape)}, which has no spatial axes; choose a "
                "convolutional layer (the default is the last one)."
            )
        return activation

    def layer_signals(self) -> tuple[Tensor, Tensor | None]:
        """The layer's activations and, if the method needs them, d(score)/d(activations), as maps."""
        assert self.layer is not None
        first = True

        def start_graph(output: Tensor) -> Tensor:
            # Below the layer nothing needs a graph; from its first call on, autograd records.
            nonlocal first
            if not first or not self.needs_gradient:
                return output
            first = False
            torch.set_grad_enabled(True)
            return output.detach().requires_grad_(True)

        with probe.Hooks() as hooks, torch.no_grad():
            probe.replace_output(hooks, self.model, self.layer, start_graph)
            record = probe.capture(hooks, self.model, self.layer, call=self.opts.get("call"))
            scores, _ = self.forward(self.inputs, hooks)
            activation = record.output()
            grads = None
            if self.needs_gradient:
                if not scores.requires_grad:
                    raise TargetError(
                        f"the target does not depend on layer {self.layer!r}'s output; choose a layer between "
                        "the input and the target."
                    )
                (grads,) = torch.autograd.grad(scores.sum(), activation)
        self.scores = scores.detach()
        acts = self.as_map(activation.detach()).float()
        return acts, None if grads is None else self.as_map(grads).float()


def _spatial_axes(t: Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


@register("gradcam")
class GradCAM(CAMMethod):
    """Selvaraju et al. 2017: channel weights alpha_k = mean over positions of d(score)/dA_k;
    map = ReLU(sum_k alpha_k A_k), upsampled bilinearly to the input."""

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        weights = grads.mean(dim=_spatial_axes(grads), keepdim=True)
        return (weights * activations).sum(dim=1).clamp(min=0)


@register("gradcam++")
class GradCAMPlusPlus(CAMMethod):
    """Chattopadhyay et al. 2018: Grad-CAM with pixel-wise weights from second and third derivatives
    (under the exponential-score assumption, as in the paper and pytorch-grad-cam)."""

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        axes = _spatial_axes(grads)
        g2, g3 = grads.pow(2), grads.pow(3)
        total = activations.sum(dim=axes, keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (grads.clamp(min=0) * alpha).sum(dim=axes, keepdim=True)
        return (weights * activations).sum(dim=1).clamp(min=0)


@register("scorecam")
class ScoreCAM(CAMMethod):
    """Wang et al. 2020: each channel, upsampled and scaled to [0, 1], masks the input; the target's scores on
    the masked inputs, softmaxed over channels, weigh the channels (as pytorch-grad-cam does). Gradient-free;
    costs one forward pass per channel and input, batched by ``batch_size``."""

    options = defaults(**CAMMethod.options, batch_size=64)
    needs_gradient = False
    single_input_only = "its channels mask one image"

    def attribute(self) -> Result:
        self.count("batch_size")  # checked before the forward pass
        return super().attribute()

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        x = self.inputs
        n, k = activations.shape[:2]
        spatial = tuple(x.shape[2:])
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        masks = F.interpolate(activations, size=spatial, mode=mode, align_corners=True)
        flat = masks.reshape(n, k, -1)
        low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
        masks = ((flat - low) / (high - low + 1e-8)).reshape(n, k, *spatial).to(x.dtype)
        batch_size = self.count("batch_size")
        if self.target.unit is not None:
            raise TargetError("scorecam explains model outputs; a Unit target needs a gradient method.")
        scores = torch.empty(n, k, device=x.device)
        # One input at a time: its k masked copies run in batches; the target repeats for each copy.
        with torch.no_grad():
            for i in range(n):
                for start in range(0, k, batch_size):
                    chunk = x[i : i + 1] * masks[i, start : start + batch_size, None]
                    output = self.run(chunk, of=i)
                    scores[i, start : start + batch_size] = self.target.scores(output, of=i).float()
        weights = scores.softmax(dim=1).view(n, k, *([1] * len(spatial)))
        return (weights.to(activations) * activations).sum(dim=1).clamp(min=0)


@register("cam")
class CAM(CAMMethod):
    """Zhou et al. 2016, for networks ending in global average pooling and a linear layer: the class's
    weights in that layer (``head``, default the last ``nn.Linear``) weigh the layer's feature maps.
    No ReLU: the map's spatial mean equals the class logit minus its bias."""

    options = defaults(**CAMMethod.options, head=None)
    needs_gradient = False

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        head = self._head()
        if head.in_features != activations.shape[1]:
            raise BadInputError(
                f"cam: layer {self.layer!r} has {activations.shape[1]} channels but the head takes "
                f"{head.in_features} features; CAM needs the feature map that global average pooling feeds "
                "into the head (choose that layer, or use gradcam for other architectures)."
            )
        if self.target.classes is None:
            raise TargetError("cam explains a class of the linear head; pass a class target (or None).")
        weights = head.weight.detach().float()[self.target.classes.to(head.weight.device)]
        weights = weights.view(*weights.shape, *([1] * (activations.ndim - 2)))
        return (weights.to(activations.device) * activations).sum(dim=1)

    def _head(self) -> nn.Linear:
        name = self.opts.get("head")
        if name is not None:
            head = probe.named_layer(self.model, name)
            if not isinstance(head, nn.Linear):
                raise BadInputError(f"head {name!r} is a {type(head).__name__}, not nn.Linear.")
            return head
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise BadInputError("cam needs a model ending in global average pooling and nn.Linear; it has none.")
        return linears[-1]


@register("guided_gradcam")
class GuidedGradCAM(GradCAM):
    """Selvaraju et al. 2017: guided backprop times the Grad-CAM map upsampled to the input."""

    single_input_only = "its Grad-CAM map weighs one image's guided gradient"

    def attribute(self) -> Result:
        activations, grads = self.layer_signals()
        coarse = self.cam(activations, grads)
        spatial = tuple(self.inputs.shape[2:])
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        upsampled = F.interpolate(coarse[:, None], size=spatial, mode=mode, align_corners=False)
        guided = GuidedBackprop(
            self.model, self.inputs, self.target, None, {**GuidedBackprop.options, **self.common_options()}
        )
        gradient = guided.gradient(self.inputs).float()
        attribution = gradient * upsampled
        return Result(attribution=attribution, heatmap=attribution.abs().amax(dim=1))
