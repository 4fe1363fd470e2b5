"""FullGrad (Srinivas & Fleuret 2019): the input-gradient plus every bias's gradient, as pytorch-grad-cam has it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import probe
from .base import Method, Result, defaults, register
from .cam import augmented, first_component, scaled, upsample

_BIASED = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)


def effective_bias(module: nn.Module) -> Tensor:
    """The bias a convolution or batch norm adds to each channel: a batch norm in eval mode adds
    beta - running_mean * gamma / sqrt(running_var + eps) (the official implementation's and the peer's)."""
    bias = module.bias
    assert isinstance(bias, Tensor)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        assert module.running_var is not None
        gamma = module.weight if module.weight is not None else 1.0
        bias = bias - module.running_mean * gamma / (module.running_var + module.eps).sqrt()
    return bias.detach()


@register("fullgrad")
class FullGrad(Method):
    """Srinivas & Fleuret 2019: |x * dS/dx| per input channel plus |b * dS/dz| for every convolution and batch norm
    with a bias b (output z), each channel scaled to [0, 1] (as the official implementation and pytorch-grad-cam do),
    brought to the input's resolution and summed. Needs no layer: every biased layer takes part.

    ``eigen_smooth`` (pytorch-grad-cam's): instead of the sum, the first principal component of the maps (each
    input channel's and each biased layer's, scaled to [0, 1] and shrunk to an eighth of the input's size, as the
    peer does to bound the SVD), scaled to [0, 1] and brought back to the input's resolution."""

    options = defaults(aug_smooth=False, eigen_smooth=False)
    needs_module = True  # hooks every biased layer
    needs_spatial = True
    single_input_only = "its bias maps are laid on one image's grid"

    def attribute(self) -> Result:
        if self.opts.get("aug_smooth"):
            return Result(heatmap=augmented(self, self.full_gradient))
        return Result(heatmap=self.full_gradient())

    def full_gradient(self) -> Tensor:
        """The FullGrad map ``[N, *spatial]`` of ``self.inputs``."""
        biased = [
            (name, module)
            for name, module in self.model.named_modules()
            if isinstance(module, _BIASED) and isinstance(module.bias, Tensor)
        ]
        x = self.inputs.detach().requires_grad_(True)
        spatial = tuple(x.shape[2:])
        with probe.Hooks() as hooks, torch.enable_grad():
            records = [probe.capture(hooks, self.model, name) for name, _ in biased]
            scores, _ = self.forward(x, hooks)
            outputs = [(module, out) for (_, module), record in zip(biased, records) for out in record.outputs]
            kept = [(module, out) for module, out in outputs if out.ndim == x.ndim and out.requires_grad]
            grads = torch.autograd.grad(scores.sum(), [x, *(out for _, out in kept)], allow_unused=True)
        self.scores = scores.detach()
        input_grad = grads[0] if grads[0] is not None else torch.zeros_like(x)
        maps = [scaled((input_grad * x.detach()).abs().float(), axes=2)]  # one per input channel
        for (module, _), grad in zip(kept, grads[1:]):
            if grad is None:
                continue
            bias = effective_bias(module).float().to(grad.device).view(1, -1, *([1] * (grad.ndim - 2)))
            maps.append(upsample(scaled((bias * grad.float()).abs(), axes=2), spatial).sum(dim=1, keepdim=True))
        if not self.opts.get("eigen_smooth"):
            return torch.stack([m.sum(dim=1) for m in maps]).sum(dim=0)
        coarse = tuple(max(1, size // 8) for size in spatial)
        shrunk = torch.cat([upsample(scaled(m, axes=2), coarse) for m in maps], dim=1)
        return upsample(scaled(first_component(shrunk)), spatial)
