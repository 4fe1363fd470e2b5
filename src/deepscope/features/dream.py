"""Deep dream (Mordvintsev et al. 2015): amplify whatever a layer already sees in an image.

Gradient ascent on half the mean squared activation of a layer (so the gradient is the activation itself), over
an octave pyramid: the image is processed from a small scale up, each octave adding detail to the one below,
with a random shift (jitter) every step so no pixel grid is favoured and a step normalised by its mean size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError
from .maximize import MIN_SIZE
from .objectives import Objective, Unit, activation_norm, as_objective, check_layers, forward_until


def dream(
    model: nn.Module,
    image: Tensor,
    layer: str | Objective | Unit,
    steps: int = 10,
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    lr: float = 0.01,
    jitter: int = 16,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> Tensor:
    """``image`` dreamt by ``model``: its layer's activations amplified by gradient ascent over octaves.

    Args:
        model: the network (eval mode and frozen parameters during the call; both restored).
        image: ``[C, H, W]`` or ``[B, C, H, W]`` in [0, 1].
        layer: the layer whose activation norm grows, or any target (e.g. ``channel(layer, c)``, a ``ds.Unit``).
        steps: gradient steps per octave.
        octaves: how many scales, the smallest ``octave_scale ** (octaves - 1)`` times smaller than the image.
        octave_scale: the size ratio between consecutive octaves.
        lr: each step moves the pixels by ``lr`` times the gradient divided by its mean magnitude.
        jitter: the largest random shift (pixels) applied before each step and undone after it.
        preprocess: maps an image in [0, 1] to the model's input.
        progress: show a tqdm bar; ``None`` shows it on a terminal only.
        seed: seeds the jitter.

    Returns:
        The dreamt image, shaped as ``image``, in [0, 1], on the CPU.
    """
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or not image.is_floating_point():
        raise BadInputError("image must be a float tensor [C, H, W] or [B, C, H, W] with values in [0, 1].")
    if image.min() < 0 or image.max() > 1:
        raise BadInputError("image values must lie in [0, 1] (before the model's preprocessing).")
    if not isinstance(layer, (str, Objective, Unit)):
        raise BadInputError(f"layer must be a layer name or an objective, not {type(layer).__name__}.")
    objective = activation_norm(layer) if isinstance(layer, str) else as_objective(layer)
    check_layers(model, objective.layers)
    for name, value in (("steps", steps), ("octaves", octaves)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name}={value!r}; give a positive integer.")
    if octave_scale <= 1 or lr <= 0 or jitter < 0:
        raise BadInputError("octave_scale must be > 1, lr > 0 and jitter >= 0.")
    batch = image[None] if image.ndim == 3 else image
    height, width = batch.shape[-2:]
    smallest = min(height, width) / octave_scale ** (octaves - 1)
    if smallest < MIN_SIZE:
        fitting = max(1, 1 + int(math.log(min(height, width) / MIN_SIZE) / math.log(octave_scale)))
        raise BadInputError(
            f"the smallest octave of a {height} x {width} image would be {smallest:.1f} px (< {MIN_SIZE}); "
            f"use octaves <= {fitting}, a smaller octave_scale or a larger image."
        )
    preprocess = preprocess or (lambda x: x)
    device = probe.model_device(model)
    generator = torch.Generator().manual_seed(seed)
    base = batch.detach().float().to(device)
    sizes = [(max(1, round(height / octave_scale**k)), max(1, round(width / octave_scale**k))) for k in range(octaves)][
        ::-1
    ]

    with probe.preserved(model):
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        with torch.no_grad():  # bad layer indices surface here, before the heavy work
            objective.check(
                {k: tuple(v.shape) for k, v in forward_until(model, preprocess(base[:1]), objective.layers).items()}
            )
        detail = torch.zeros_like(base)
        bar = tqdm(
            total=octaves * steps, desc="dreaming", unit="step", disable=None if progress is None else not progress
        )
        with bar:
            for size in sizes:
                octave_base = F.interpolate(base, size=size, mode="bilinear", align_corners=False, antialias=True)
                detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
                dreamt = _ascend(model, objective, octave_base + detail, steps, lr, jitter, preprocess, generator, bar)
                detail = dreamt - octave_base
    result = (base + detail).clamp(0, 1).cpu()
    return result[0] if image.ndim == 3 else result


def _ascend(
    model: nn.Module,
    objective: Objective,
    image: Tensor,
    steps: int,
    lr: float,
    jitter: int,
    preprocess: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    bar: tqdm,
) -> Tensor:
    image = image.clamp(0, 1)
    for _ in range(steps):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator) if jitter else torch.zeros(2)).tolist()
        shifted = torch.roll(image, shifts=(int(dy), int(dx)), dims=(-2, -1)).requires_grad_(True)
        score = objective(forward_until(model, preprocess(shifted), objective.layers)).sum()
        (gradient,) = torch.autograd.grad(score, shifted)
        gradient = torch.roll(gradient, shifts=(-int(dy), -int(dx)), dims=(-2, -1))
        scale = gradient.abs().flatten(1).mean(1).clamp(min=1e-12).view(-1, 1, 1, 1)
        image = (image + lr * gradient / scale).clamp(0, 1).detach()
        bar.update(1)
    return image
