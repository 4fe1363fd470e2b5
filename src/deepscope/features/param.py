"""Image parameterisations: what gradient ascent changes, and how it becomes an image in [0, 1].

``PixelImage`` optimises the pixels themselves (Simonyan et al. 2014, Yosinski et al. 2015). ``FourierImage`` is
Lucid's decorrelated parameterisation (Olah et al. 2017, "Feature Visualization"): the optimiser changes a
spectrum whose frequencies are scaled by ``1 / frequency``, so every frequency learns at a similar rate instead
of the high ones dominating, and colours are mixed through the square root of ImageNet's colour covariance, so
the optimiser steps along decorrelated colour directions; a sigmoid maps the result into [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

# The square root of ImageNet's RGB covariance (from its SVD), as in Lucid; columns scaled so the largest has norm 1.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()

# Lucid divides the image by 4 after the inverse FFT; it keeps the initial saturation moderate.
_FOURIER_GAIN = 4.0


def _mix(image: Tensor, matrix: Tensor) -> Tensor:
    """``matrix @ pixel`` for every pixel's channel vector of ``[B, C, H, W]``."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def decorrelate_colors(image: Tensor) -> Tensor:
    """Decorrelated colour coordinates ``[B, 3, H, W]`` to RGB (before the sigmoid)."""
    return _mix(image, COLOR_CORRELATION)


def correlate_colors(rgb: Tensor) -> Tensor:
    """The inverse of :func:`decorrelate_colors`."""
    return _mix(rgb, torch.linalg.inv(COLOR_CORRELATION.double()).float())


def frequency_scale(height: int, width: int, decay_power: float = 1.0) -> Tensor:
    """``1 / max(|f|, 1 / max(H, W)) ** decay_power`` for each frequency of ``rfft2`` of an ``H x W`` image."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    frequencies = (fx * fx + fy * fy).sqrt()
    return 1.0 / frequencies.clamp(min=1.0 / max(height, width)) ** decay_power


class PixelImage:
    """The pixels themselves, ``[B, C, H, W]`` in [0, 1]; clamped back into [0, 1] after every step."""

    def __init__(self, start: Tensor) -> None:
        self.pixels = start.detach().clone().clamp(0, 1).requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.pixels]

    def __call__(self) -> Tensor:
        return self.pixels

    @torch.no_grad()
    def project(self) -> None:
        """Keep the pixels a valid image (projected gradient ascent)."""
        self.pixels.clamp_(0, 1)


class FourierImage:
    """An image as a scaled spectrum with decorrelated colours: Lucid's ``fft_image`` + ``to_valid_rgb``.

    ``image = sigmoid(colors(irfft2(scale * spectrum) / 4))``, where ``colors`` is :func:`decorrelate_colors` for
    three channels (with ``decorrelate``) and the identity otherwise.
    """

    def __init__(self, spectrum: Tensor, height: int, width: int, decorrelate: bool = True, decay_power: float = 1.0):
        self.height, self.width = height, width
        self.decorrelate = decorrelate and spectrum.shape[1] == 3
        self.scale = frequency_scale(height, width, decay_power).to(spectrum.device)
        self.spectrum = spectrum.detach().clone().requires_grad_(True)  # real view: [B, C, H, W // 2 + 1, 2]

    @classmethod
    def random(
        cls,
        shape: tuple[int, int, int, int],
        sd: float,
        generator: torch.Generator,
        device: torch.device,
        decorrelate: bool = True,
        decay_power: float = 1.0,
        centre: Tensor | None = None,
    ) -> FourierImage:
        """Spectrum entries drawn from ``N(0, sd^2)`` around the spectrum of the constant image ``centre``
        (``[1, C, 1, 1]`` in (0, 1); default mid grey); ``sd=0`` gives ``centre`` itself."""
        batch, channels, height, width = shape
        spectrum = torch.randn(batch, channels, height, width // 2 + 1, 2, generator=generator) * sd
        image = cls(spectrum.to(device), height, width, decorrelate, decay_power)
        if centre is not None:
            base = cls.from_image(centre.to(device).expand(shape), decorrelate, decay_power)
            image.spectrum.data.add_(base.spectrum.detach())
        return image

    @classmethod
    def from_image(cls, image: Tensor, decorrelate: bool = True, decay_power: float = 1.0) -> FourierImage:
        """The parameterisation whose image is ``image`` (values in (0, 1); 0 and 1 are nudged inside)."""
        _, channels, height, width = image.shape
        eps = 1e-4
        x = torch.logit(image.detach().float().clamp(eps, 1 - eps))
        if decorrelate and channels == 3:
            x = correlate_colors(x)
        scale = frequency_scale(height, width, decay_power).to(image.device)
        spectrum = torch.fft.rfft2(x * _FOURIER_GAIN, norm="ortho") / scale
        return cls(torch.view_as_real(spectrum), height, width, decorrelate, decay_power)

    def parameters(self) -> list[Tensor]:
        return [self.spectrum]

    def __call__(self) -> Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho") / _FOURIER_GAIN
        if self.decorrelate:
            x = decorrelate_colors(x)
        return torch.sigmoid(x)

    def project(self) -> None:
        """Nothing to do: the sigmoid keeps every image valid."""


def noise_sd(param: str) -> float:
    """The spread of a ``start="noise"`` image: Lucid's 0.01 on the spectrum, 0.1 around the mean on pixels."""
    return 0.01 if param == "fourier" else 0.1
