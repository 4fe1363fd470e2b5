"""Random transforms that make activation maximisation robust (Lucid's transformation robustness), and a blur.

A transform is a callable ``(images [B, C, H, W], generator) -> images`` drawing its randomness from ``generator``
(a CPU ``torch.Generator``), independently per image. ``jitter``, ``scale`` and ``rotate`` are affine maps:
:func:`compose` multiplies consecutive ones into one matrix per image and resamples once with
``affine_grid`` / ``grid_sample``, on the images' device. Only ``pad`` changes the size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BadInputError

Transform = Callable[[Tensor, torch.Generator], Tensor]


class Affine:
    """A random affine map per image, as the ``[B, 3, 3]`` matrices that ``affine_grid`` samples the input with."""

    def __init__(self, name: str, matrices: Callable[[int, int, int, torch.Generator], Tensor]) -> None:
        self.name = name
        self.matrices = matrices

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return _resample(images, self.matrices(len(images), images.shape[-2], images.shape[-1], generator))

    def __repr__(self) -> str:
        return self.name


def _resample(images: Tensor, matrices: Tensor) -> Tensor:
    theta = matrices[:, :2].to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _choice(values: Sequence[float], count: int, generator: torch.Generator) -> Tensor:
    picks = torch.randint(len(values), (count,), generator=generator)
    return torch.as_tensor(values, dtype=torch.float32)[picks]


def pad(pixels: int, value: float = 0.5) -> Transform:
    """A border of ``pixels`` of constant ``value`` (mid grey), so jitter and rotation have room to move."""

    def transform(images: Tensor, _generator: torch.Generator) -> Tensor:
        return F.pad(images, [pixels] * 4, mode="constant", value=value)

    return transform


def jitter(pixels: int) -> Affine:
    """A random shift of up to ``pixels`` in each direction (whole pixels), the border pixels repeated."""

    def matrices(count: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        shift = torch.randint(-pixels, pixels + 1, (count, 2), generator=generator).float()
        m = torch.eye(3).repeat(count, 1, 1)
        m[:, 0, 2] = 2 * shift[:, 0] / width
        m[:, 1, 2] = 2 * shift[:, 1] / height
        return m

    return Affine(f"jitter({pixels})", matrices)


def scale(factors: Sequence[float]) -> Affine:
    """A zoom about the centre by a factor drawn from ``factors`` (e.g. 0.9 ... 1.1)."""

    def matrices(count: int, _h: int, _w: int, generator: torch.Generator) -> Tensor:
        inverse = 1.0 / _choice(factors, count, generator)
        m = torch.eye(3).repeat(count, 1, 1)
        m[:, 0, 0] = inverse
        m[:, 1, 1] = inverse
        return m

    return Affine(f"scale({min(factors):g}..{max(factors):g})", matrices)


def rotate(degrees: Sequence[float]) -> Affine:
    """A rotation about the centre by an angle (degrees) drawn from ``degrees``."""

    def matrices(count: int, _h: int, _w: int, generator: torch.Generator) -> Tensor:
        angle = _choice(degrees, count, generator) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        m = torch.eye(3).repeat(count, 1, 1)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
        return m

    return Affine(f"rotate({min(degrees):g}..{max(degrees):g})", matrices)


def compose(transforms: Sequence[Transform]) -> Transform:
    """The transforms in order; runs of affine ones are merged into one resampling."""
    steps = list(transforms)

    def transform(images: Tensor, generator: torch.Generator) -> Tensor:
        combined: Tensor | None = None
        for step in steps:
            if isinstance(step, Affine):
                m = step.matrices(len(images), images.shape[-2], images.shape[-1], generator)
                # affine_grid maps output to input coordinates, so the first transform's matrix comes first.
                combined = m if combined is None else combined @ m
                continue
            if combined is not None:
                images, combined = _resample(images, combined), None
            images = step(images, generator)
        return images if combined is None else _resample(images, combined)

    return transform


def standard_transforms() -> list[Transform]:
    """Lucid's / Lucent's ``standard_transforms``: pad 12, jitter 8, scale 0.9-1.1, rotate -10-10 degrees, jitter 4."""
    return [
        pad(12),
        jitter(8),
        scale([1 + (i - 5) / 50 for i in range(11)]),
        rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """``images`` blurred by a Gaussian of ``sigma`` pixels (separable, reflected at the border; shape kept)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    height, width = images.shape[-2:]
    if radius >= min(height, width):
        raise BadInputError(f"blur sigma {sigma} is too wide for a {height} x {width} image; use a smaller sigma.")
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, [radius, radius, radius, radius], mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
