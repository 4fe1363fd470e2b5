"""Filters as pictures (seeds 000, 003): what a layer's weights look for, and whether they look trained.

A first-layer convolution on RGB inputs shows each kernel as one colour image (AlexNet's 64 x 3 x 11 x 11, a
ResNet's 64 x 3 x 7 x 7); a deeper convolution shows each kernel channel by channel as grey images (a row per
filter); a Linear layer fed by the flattened image shows each neuron's weights reshaped back to the image.
Each filter also gets a noise score, because noisy first-layer filters are a sign of poor training (seed 000).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure
from ..track.records import Image, Scalar

Scale = Literal["filter", "shared"]
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Filters(FigureDisplay):
    """The kernels of one layer, scaled for display, with a noise score per filter.

    Attributes:
        layer: the layer's name.
        weight: the kernels ``[O, I, H, W]`` as stored (a Linear layer's rows reshaped to ``[O, *input_shape]``).
        images: the kernels scaled to [0, 1]: ``[O, H, W, 3]`` when ``mode == "rgb"``, else ``[O, I, H, W]``.
        mode: ``"rgb"`` (three input channels drawn as one colour image) or ``"grey"`` (channel by channel).
        scale: ``"filter"`` (each filter from its own minimum to its own maximum) or ``"shared"`` (one minimum
            and maximum for the whole layer, so filters can be compared in strength).
        noise: ``[O]`` the roughness of each filter relative to random initialisation (see :func:`noise_score`):
            1 on average for an untrained layer of any kernel size, near 0 for smooth kernels, about 2 for a
            checkerboard.
        untrained_sd: the standard deviation of ``noise.mean()`` over untrained layers of this shape (whose mean
            is 1): a layer whose mean noise is several of these below 1 is smoother than chance.
    """

    layer: str
    weight: Tensor
    images: Tensor
    mode: str
    scale: str
    noise: Tensor
    untrained_sd: float = 0.0

    @property
    def noise_vs_untrained(self) -> str:
        """The layer's mean noise against untrained layers of its shape, e.g. ``"0.84 (untrained 1.00 ± 0.06)"``."""
        return f"{float(self.noise.mean()):.2f} (untrained 1.00 ± {self.untrained_sd:.2f})"

    def grid(self, max_filters: int = 64, max_channels: int = 16, cell: int = 24) -> np.ndarray:
        """The filters as one uint8 picture: RGB (or one-channel) tiles in a square grid, else a row of channels per
        filter.

        Each kernel is enlarged by pixel repetition to at least ``cell`` pixels, with a 1-pixel white border.
        """
        images = self.images[:max_filters]
        if self.mode == "rgb":
            tiles = [images[i].numpy() for i in range(images.shape[0])]
            columns = math.ceil(math.sqrt(len(tiles)))
        else:
            images = images[:, :max_channels]
            tiles = [
                np.repeat(images[o, i].numpy()[..., None], 3, axis=2)
                for o in range(images.shape[0])
                for i in range(images.shape[1])
            ]
            # A row of channels per filter; one-channel kernels (a grey image's first layer) in a square grid instead
            # of one tall column.
            columns = images.shape[1] if images.shape[1] > 1 else math.ceil(math.sqrt(len(tiles)))
        height, width = tiles[0].shape[:2]
        factor = max(1, math.ceil(cell / max(height, width)))
        height, width = height * factor, width * factor
        rows = math.ceil(len(tiles) / columns)
        canvas = np.ones((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), dtype=np.float32)
        for i, tile in enumerate(tiles):
            r, c = divmod(i, columns)
            big = tile.repeat(factor, axis=0).repeat(factor, axis=1)
            canvas[
                1 + r * (height + 1) : 1 + r * (height + 1) + height, 1 + c * (width + 1) : 1 + c * (width + 1) + width
            ] = big
        return (canvas.clip(0, 1) * 255).round().astype(np.uint8)

    @property
    def caption(self) -> str:
        scaling = "each filter scaled on its own" if self.scale == "filter" else "one scale shared by all filters"
        kind = "RGB" if self.mode == "rgb" else "channel by channel"
        return f"{self.layer}: {self.weight.shape[0]} filters {tuple(self.weight.shape[1:])}, {kind}; {scaling}"

    def figure(self, max_filters: int = 64, max_channels: int = 16) -> NotebookFigure:
        """The grid of filters, and beside it each filter's noise score (the scaling is stated in the title)."""

        grid = self.grid(max_filters, max_channels)
        shown = min(max_filters, self.weight.shape[0])
        aspect = grid.shape[1] / grid.shape[0]
        figure = new_figure(min(5.0 * aspect, 10.0) + 3.0, 5.0)
        left, right = figure.subplots(1, 2, width_ratios=[max(aspect, 0.5) * 3, 1.4])
        left.imshow(grid, interpolation="nearest")
        left.set_xticks([])
        left.set_yticks([])
        left.set_title(self.caption, fontsize=9)
        noise = self.noise[:shown].numpy()
        # where an untrained layer's mean falls 95 % of the time, behind the bars
        right.axvspan(1 - 2 * self.untrained_sd, 1 + 2 * self.untrained_sd, color="grey", alpha=0.3, lw=0, zorder=0)
        right.axvline(1.0, color="grey", linestyle=":", linewidth=1, zorder=0)
        right.barh(range(shown), noise, color="tab:red", alpha=0.8)
        right.axvline(float(self.noise.mean()), color="black", linewidth=1)
        right.invert_yaxis()
        right.set_xlabel("noise (0 smooth, 1 untrained)")
        right.set_ylabel("filter")
        right.set_title(
            f"mean noise {float(self.noise.mean()):.2f}\nuntrained 1.00 ± {self.untrained_sd:.2f}", fontsize=9
        )
        return figure

    def to_records(self, tag: str, step: int) -> list[Image | Scalar]:
        """Records for :meth:`deepscope.Run.log_records`: the grid as an :class:`Image` under ``tag`` and the
        mean noise score as a :class:`Scalar` under ``tag + "/noise"``; logged at several steps they show how
        the filters evolve over training."""
        return [
            Image(tag=tag, step=step, pixels=self.grid(), caption=self.caption),
            Scalar(tag=f"{tag}/noise", value=float(self.noise.mean()), step=step),
        ]


def filters(
    model: nn.Module,
    layer: str | None = None,
    scale: Scale = "filter",
    input_shape: Sequence[int] | None = None,
) -> Filters:
    """The kernels of ``layer`` as images, with a noise score per filter.

    Args:
        model: the network (its weights are read, nothing is run).
        layer: a convolution (1-D kernels are shown as one-row images) or a Linear layer; default: the first
            convolution in ``model.named_modules()``.
        scale: ``"filter"`` scales each filter from its minimum to its maximum; ``"shared"`` uses the layer's
            minimum and maximum for all, so weak filters look faint.
        input_shape: for a Linear layer, the shape ``(C, H, W)`` of the image it is fed (flattened); its rows are
            reshaped back to it (C = 3: colour images; otherwise channel by channel).

    Returns:
        A :class:`Filters` with ``weight``, ``images``, ``noise``, ``grid()``, ``figure()`` and ``to_records()``.
    """
    if scale not in ("filter", "shared"):
        raise BadInputError(f"scale={scale!r}; pass 'filter' (each filter on its own) or 'shared'.")
    name = layer if layer is not None else _first_conv(model)
    module = probe.named_layer(model, name)
    weight = _kernels(module, name, input_shape)
    rgb = weight.shape[1] == 3
    images = _scaled(weight, scale)
    if rgb:
        images = images.permute(0, 2, 3, 1).contiguous()
    return Filters(
        layer=name,
        weight=weight,
        images=images,
        mode="rgb" if rgb else "grey",
        scale=scale,
        noise=noise_score(weight),
        untrained_sd=untrained_noise_sd(weight.shape),
    )


def noise_score(weight: Tensor) -> Tensor:
    """``[O]`` roughness of kernels ``[O, I, H, W]`` relative to random initialisation of the same shape.

    Each kernel's raw roughness (:func:`roughness`) is divided by the mean raw roughness of untrained kernels of its
    shape (:func:`untrained_roughness`), so an untrained layer scores 1 at any kernel size, smooth kernels near 0
    and a checkerboard about twice as high. Small kernels need this: the raw roughness of white noise depends on the
    kernel's size (1.12 at 3 x 3, where the variance is estimated from nine weights; 1.02 at 7 x 7), and smooth
    small kernels can't score near 0 (a 3 x 3 Gabor patch about 0.66, a 7 x 7 one 0.16). Compare a layer's mean with
    :func:`untrained_noise_sd`, the spread of an untrained layer's.
    """
    w = weight.detach().double()
    if w.shape[2] * w.shape[3] == 1:
        return torch.zeros(w.shape[0])
    mean, _sd = untrained_roughness(w.shape[2], w.shape[3])
    return (roughness(w) / mean).float()


def untrained_noise_sd(shape: Sequence[int]) -> float:
    """The standard deviation of the mean :func:`noise_score` of an untrained layer of kernels ``[O, I, H, W]``
    (its mean is 1): how far from 1 chance alone moves an untrained layer's score.

    Under random initialisation every kernel channel is independent, so it is one channel's spread over
    ``sqrt(O * I)``.
    """
    filters, channels, height, width = (int(n) for n in shape)
    if height * width == 1:
        return 0.0
    mean, sd = untrained_roughness(height, width)
    return sd / mean / math.sqrt(filters * channels)


def roughness(weight: Tensor) -> Tensor:
    """``[O]``: each kernel's mean squared difference of neighbouring weights over twice their variance, averaged
    over the two axes and the input channels (a channel with constant weights counts 0)."""
    w = weight.detach().double()
    variance = w.flatten(2).var(dim=2, unbiased=False)  # [O, I]
    terms = [w.diff(dim=axis).pow(2).flatten(2).mean(dim=2) for axis in (2, 3) if w.shape[axis] > 1]
    if not terms:
        return torch.zeros(w.shape[0], dtype=w.dtype)
    ratio = torch.stack(terms).mean(dim=0) / (2 * variance)
    return torch.where(variance > 0, ratio, torch.zeros_like(ratio)).mean(dim=1)


UNTRAINED_SAMPLES = 16384
"""How many random kernels :func:`untrained_roughness` draws (its mean is within about 0.3 % of the limit), fewer
for large kernels (a Linear layer's rows), whose roughness varies less, so that at most 4M weights are drawn."""


@functools.lru_cache(maxsize=64)
def untrained_roughness(height: int, width: int) -> tuple[float, float]:
    """The mean and standard deviation of the :func:`roughness` of one ``H x W`` kernel channel drawn as torch
    initialises it (independent uniform weights, ``kaiming_uniform_``), from :data:`UNTRAINED_SAMPLES` kernels
    drawn with a fixed private seed."""
    generator = torch.Generator().manual_seed(0)
    count = max(64, min(UNTRAINED_SAMPLES, 4_000_000 // (height * width)))
    kernels = torch.rand(count, 1, height, width, generator=generator, dtype=torch.float64) - 0.5
    values = roughness(kernels)
    return float(values.mean()), float(values.std())


def _first_conv(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if isinstance(module, _CONV):
            return name
    raise BadInputError(f"{type(model).__name__} has no convolution; pass layer=<name> of a Conv or Linear layer.")


def _kernels(module: nn.Module, name: str, input_shape: Sequence[int] | None) -> Tensor:
    """The layer's weights as ``[O, I, H, W]``."""
    if isinstance(module, _CONV):
        weight = module.weight.detach().float().cpu()
        if weight.ndim == 3:  # 1-D kernels: one row
            return weight[:, :, None, :]
        if weight.ndim == 5:
            raise BadInputError(f"layer {name!r} has 3-D kernels; only 1-D and 2-D kernels can be drawn.")
        return weight
    if isinstance(module, nn.Linear):
        if input_shape is None:
            raise BadInputError(
                f"layer {name!r} is a Linear layer; pass input_shape=(C, H, W), the shape of the image it is fed "
                "flattened, to see its rows as images."
            )
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or math.prod(shape) != module.in_features:
            raise BadInputError(
                f"input_shape={tuple(input_shape)} has {math.prod(shape)} values but layer {name!r} takes "
                f"{module.in_features}; pass the (C, H, W) of the image it is fed."
            )
        return module.weight.detach().float().cpu().reshape(-1, *shape)
    raise BadInputError(
        f"layer {name!r} is a {type(module).__name__}; filters are drawn for Conv and Linear layers only."
    )


def _scaled(weight: Tensor, scale: Scale) -> Tensor:
    """Min-max scaling to [0, 1], per filter (over all its channels, so colours keep their balance) or shared."""
    if scale == "shared":
        low, high = weight.min(), weight.max()
    else:
        flat = weight.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    span = high - low
    return torch.where(span > 0, (weight - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.5)
