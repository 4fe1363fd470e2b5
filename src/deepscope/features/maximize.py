"""Activation maximisation: the image that a class, a channel or a neuron responds to most, by gradient ascent.

``maximize(model, channel("features.relu3", 5))`` optimises an image so that the objective grows. What "the image"
is and how it is kept natural is a :class:`Recipe`; three presets follow the literature:

* ``"simonyan"`` (Simonyan et al. 2014): pixels with an L2 penalty on the zero-centred image;
* ``"yosinski"`` (Yosinski et al. 2015): pixels with L2 decay, a Gaussian blur every few steps and clipping of
  pixels with a small norm or a small contribution;
* ``"lucid"`` (Olah et al. 2017; the default): a decorrelated Fourier image with decorrelated colours, seen
  through random pad / jitter / scale / rotate, with Lucid's redirected ReLU for the first steps.

The forward pass stops at the deepest layer the objective needs, and the model's mode and ``requires_grad`` flags
are restored afterwards, whatever happens. The image's zero is the data's mean (the image the model's
normalisation maps to 0), as in Simonyan et al.'s zero-centred images: starts are centred on it, the L2 decay
pulls towards it and clipping sets pixels to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure
from ..targets import TargetSpec
from ..track.records import Image
from .objectives import Objective, as_objective, check_layers, forward_until
from .param import FourierImage, PixelImage, noise_sd
from .transforms import Transform, compose, gaussian_blur, standard_transforms

NEUTRAL = 0.5
"""Mid grey: the image's zero when neither ``mean=`` nor an affine ``preprocess`` tells the data's mean."""

MIN_SIZE = 8

DEFAULT_SIZE = 128
"""The image side when neither ``size``, a start image nor the model's first layer tells it."""

COMMON_SIZES = (28, 32, 64, 96, 224, 256, 299, 227, 112, 48, 16)
"""The sides tried, in order, when the model can't run on :data:`DEFAULT_SIZE` and no size was given."""

DEAD_START_REDIRECT = 16
"""Steps of redirected ReLU when the objective has no gradient at the start and the recipe has none."""

CENTRE_START = 0.25
"""With ``centre_bias``, the side of the first updated region, as a fraction of the image's sides."""


@dataclass(frozen=True)
class Recipe:
    """How an image is parameterised, regularised and optimised; override any field in :func:`maximize`.

    Attributes:
        param: ``"pixel"`` (the pixels themselves, kept in [0, 1]) or ``"fourier"`` (Lucid's decorrelated image).
        decorrelate: with ``"fourier"`` and 3 channels, mix colours through ImageNet's colour correlation.
        transforms: random transforms applied before every forward pass (see ``features.transforms``);
            ``None`` is Lucid's standard stack (pad 12, jitter 8, scale, rotate, jitter 4).
        optimizer: ``"adam"`` or ``"sgd"`` (plain gradient ascent).
        lr: the learning rate.
        decay: Simonyan et al.'s lambda: ``decay / 2 * ||image - mean||^2`` (per image, summed over its pixels,
            ``mean`` the data's mean pixel) is subtracted from the objective, so each step's gradient pulls every
            pixel towards the mean by ``decay`` times its distance (weight decay on the zero-centred image).
        blur_every: blur the pixels with a Gaussian every this many steps (0: never); pixel images only.
        blur_sigma: that Gaussian's width in pixels.
        clip_norm: after each step, set the pixels whose colour vector's norm (from the mean) lies below this
            percentile to the mean (0: off); pixel images only.
        clip_contribution: likewise for pixels whose contribution ``|sum_c (x - mean) * d objective / dx|`` lies
            below this percentile (0: off); pixel images only.
        redirect_relu: use Lucid's redirected ReLU gradient for this many first steps, so units that never fire
            (whose images would otherwise stay grey) still get a gradient. With 0, it is switched on for
            :data:`DEAD_START_REDIRECT` steps (with a warning) when the objective has no gradient at the start.
        centre_bias: the fraction of the steps (``True``: half) during which only a central region of the image
            is updated, a rectangle growing linearly from a quarter of each side to the whole image, so what the
            unit responds to forms in the centre and the borders are filled in last (Nguyen et al. 2016's
            centre-biased regularisation). The region grows rather than shrinks, and outside it the model sees the
            image as it was at the start, so no gradient reaches the border: this works the same for pixels, the
            Fourier image and a generator's latent code.
    """

    param: Literal["pixel", "fourier"] = "fourier"
    decorrelate: bool = True
    transforms: Sequence[Transform] | None = None
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 0.05
    decay: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    clip_norm: float = 0.0
    clip_contribution: float = 0.0
    redirect_relu: int = 0
    centre_bias: bool | float = 0.0


SIMONYAN_DECAY = 0.03
"""The pixel presets' L2 weight. On the demo's FashionMNIST CNN it keeps 98 % of the class logits with 10 % less
distance from the mean, and 71 % of a middle layer's channel means with 60 % less (table in docs/maximize.md)."""

PRESETS: dict[str, Recipe] = {
    "simonyan": Recipe(param="pixel", transforms=(), decay=SIMONYAN_DECAY),
    "yosinski": Recipe(
        param="pixel", transforms=(), decay=SIMONYAN_DECAY, blur_every=4, blur_sigma=0.5, clip_norm=20.0
    ),
    "lucid": Recipe(param="fourier", transforms=None, redirect_relu=16),
}

_PARAMS = ("pixel", "fourier")
_OPTIMIZERS = ("adam", "sgd")


@dataclass
class Maximization(FigureDisplay):
    """What :func:`maximize` found.

    Attributes:
        images: ``[B, C, H, W]`` in [0, 1] on the CPU, one image per unit of the objective.
        history: ``[steps, B]``: each image's objective (without the penalty) at every step.
        labels: the unit each image maximises, e.g. ``"features.relu3[5]"``.
        objective: the objective's name.
        recipe: the recipe used.
        latents: with ``generator=``, the optimised latent codes (``images`` is ``generator(latents)``).
    """

    images: Tensor
    history: Tensor
    labels: list[str]
    objective: str
    recipe: Recipe = field(repr=False)
    latents: Tensor | None = None

    @property
    def scores(self) -> Tensor:
        """The objective of each image at the last step ``[B]``."""
        return self.history[-1]

    def figure(self, columns: int = 8) -> NotebookFigure:
        """The images as a grid, each titled with its unit and final objective."""

        count = len(self.images)
        columns = max(1, min(columns, count))
        rows = -(-count // columns)
        figure = new_figure(1.6 * columns, 1.75 * rows)
        axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i < count:
                ax.imshow(_display(self.images[i]), vmin=0, vmax=1, cmap="gray" if self.images.shape[1] == 1 else None)
                ax.set_title(f"{self.labels[i]}\n{float(self.scores[i]):.3g}", fontsize=7)
        return figure

    def to_records(self, tag: str, step: int = 0) -> list[Image]:
        """One :class:`~deepscope.track.records.Image` per unit, tagged ``tag/<unit>``, for ``Run.log_records``."""
        return [
            Image(tag=f"{tag}/{label}", step=step, pixels=_display(image), caption=f"{label}: {float(score):.4g}")
            for image, label, score in zip(self.images, self.labels, self.scores)
        ]


def _display(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] as ``[H, W]`` (grey) or ``[H, W, 3]`` floats for imshow and PNG."""
    array = image.detach().float().cpu().clamp(0, 1).numpy()
    return array[0] if array.shape[0] == 1 else array[:3].transpose(1, 2, 0)


# The redirected ReLU (Lucid) -----------------------------------------------------------------------------------------


class _RedirectedReLU(torch.autograd.Function):
    """ReLU forward; backward, for an image whose ReLU lets no gradient through, the gradient as if it did,
    except where it would push an already negative input further down (Lucid's ``redirected_relu_grad``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        # grad is d loss / d output, with loss = -objective: a positive grad lowers the input.
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        flat = relu_grad.reshape(len(relu_grad), -1) if relu_grad.ndim > 1 else relu_grad.reshape(1, -1)
        passes = (flat.norm(dim=1) > 0).reshape(-1, *([1] * (grad.ndim - 1))) if grad.ndim > 1 else flat.norm() > 0
        return torch.where(passes, relu_grad, redirected)


def redirected_relu(x: Tensor) -> Tensor:
    """``relu(x)`` whose gradient reaches a unit that is off for the whole image (Lucid's redirected ReLU).

    The backward pass must start from a loss to minimise (``-objective``), as in :func:`maximize`.
    """
    return _RedirectedReLU.apply(x)


def redirect_relus() -> contextlib.AbstractContextManager[Any]:
    """Within the block every ReLU of any model (module, functional or tensor method) is :func:`redirected_relu`."""
    return probe.rewrite(probe.relu_rewrite(redirected_relu))


# Checks --------------------------------------------------------------------------------------------------------------


def _recipe(preset: str | Recipe, options: dict[str, Any]) -> Recipe:
    if isinstance(preset, Recipe):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise BadInputError(f"unknown preset {preset!r}; choose one of {', '.join(map(repr, PRESETS))} or a Recipe.")
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise BadInputError(f"unknown option(s) {', '.join(unknown)}; maximize() accepts {', '.join(sorted(names))}.")
    recipe = dataclasses.replace(base, **options)
    if recipe.param not in _PARAMS:
        raise BadInputError(f"unknown param {recipe.param!r}; choose one of {', '.join(map(repr, _PARAMS))}.")
    if recipe.optimizer not in _OPTIMIZERS:
        raise BadInputError(
            f"unknown optimizer {recipe.optimizer!r}; choose one of {', '.join(map(repr, _OPTIMIZERS))}."
        )
    if recipe.param != "pixel" and (recipe.blur_every or recipe.clip_norm or recipe.clip_contribution):
        raise BadInputError(
            "blur_every, clip_norm and clip_contribution change pixels directly; they need param='pixel' "
            f"(got param={recipe.param!r})."
        )
    for name in ("clip_norm", "clip_contribution"):
        if not 0 <= getattr(recipe, name) < 100:
            raise BadInputError(f"{name}={getattr(recipe, name)} is a percentile; give a number in [0, 100).")
    if recipe.lr <= 0 or recipe.decay < 0 or recipe.blur_every < 0 or recipe.redirect_relu < 0:
        raise BadInputError("lr must be positive; decay, blur_every and redirect_relu must not be negative.")
    if recipe.centre_bias is True:
        recipe = dataclasses.replace(recipe, centre_bias=0.5)
    if not isinstance(recipe.centre_bias, (int, float)) or not 0 <= recipe.centre_bias <= 1:
        raise BadInputError(
            f"centre_bias={recipe.centre_bias!r}; give True or the fraction of the steps in [0, 1] during which "
            "the updated region grows."
        )
    return recipe


def _image_size(size: int | tuple[int, int] | None, start: object, model_side: int | None) -> tuple[int, int]:
    if size is None:
        if isinstance(start, Tensor):
            return int(start.shape[-2]), int(start.shape[-1])
        side = model_side or DEFAULT_SIZE
        return side, side
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if min(height, width) < MIN_SIZE:
        raise BadInputError(f"image size {height} x {width} is too small; give size >= {MIN_SIZE} pixels.")
    return int(height), int(width)


def model_input(model: nn.Module) -> tuple[int | None, int | None]:
    """``(channels, side)`` of the images ``model`` takes, as far as its first layer tells (``None``: unknown).

    A first 2-D convolution tells the channels; a first Linear layer fed a flattened square image (``in_features``
    is ``side^2`` or ``3 side^2``) tells both.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels, None
        if isinstance(module, nn.Linear):
            for channels in (1, 3):
                side = math.isqrt(module.in_features // channels)
                if channels * side * side == module.in_features and side >= MIN_SIZE:
                    return channels, side
            return None, None
        if isinstance(module, (nn.Conv1d, nn.Conv3d, nn.Embedding)):
            return None, None
    return None, None


def data_mean(
    preprocess: Callable[[Tensor], Tensor] | None,
    mean: float | Sequence[float] | None,
    channels: int,
    size: tuple[int, int],
    device: torch.device | str = "cpu",
) -> Tensor:
    """``[1, C, 1, 1]`` on ``device``: the image's zero in [0, 1] units: ``mean`` if given, else the image that
    ``preprocess`` maps to 0 when it is a per-channel affine map (a normalisation ``(x - mean) / std``), else mid
    grey. ``preprocess`` runs on constant images on ``device``, where the model's inputs are."""
    if mean is not None:
        values = torch.as_tensor(mean, dtype=torch.float32).flatten()
        if len(values) == 1:
            values = values.expand(channels)
        if len(values) != channels or values.min() < 0 or values.max() > 1:
            raise BadInputError(
                f"mean={mean!r}; give the data's mean pixel in [0, 1], one number or one per channel ({channels})."
            )
        return values.view(1, channels, 1, 1).to(device)
    grey = torch.full((1, channels, 1, 1), NEUTRAL, device=device)
    if preprocess is None:
        return grey
    try:
        with torch.no_grad():
            low, high = (preprocess(torch.full((1, channels, *size), v, device=device)).float() for v in (0.0, 1.0))
    except Exception:  # a preprocess that needs more than a plain image: its zero is unknown
        return grey
    if low.ndim != 4 or low.shape[:2] != (1, channels) or high.shape != low.shape:  # a resize may change H x W
        return grey
    slope, offset = (high - low).flatten(2), low.flatten(2)
    constant = (slope.std(2) < 1e-6).all() and (offset.std(2) < 1e-6).all() and (slope.abs() > 1e-6).all()
    if not constant:
        return grey
    zero = (-offset.mean(2) / slope.mean(2)).view(1, channels, 1, 1)
    with torch.no_grad():
        affine = preprocess(zero.expand(1, channels, *size)).float().abs().max() < 1e-4 * slope.abs().max()
    return zero if bool(affine) and zero.min() >= 0 and zero.max() <= 1 else grey


def _start_tensor(start: Tensor, channels: int, size: tuple[int, int]) -> Tensor:
    image = start.detach().float()
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != channels or tuple(image.shape[-2:]) != size:
        raise BadInputError(
            f"start has shape {tuple(start.shape)}; give [C, H, W] or [B, C, H, W] with C={channels} and "
            f"H x W = {size[0]} x {size[1]} (or leave size out to use the start's)."
        )
    if image.min() < 0 or image.max() > 1:
        raise BadInputError("start must be an image with values in [0, 1] (before the model's preprocessing).")
    return image


# The optimisation ----------------------------------------------------------------------------------------------------


def maximize(
    model: nn.Module,
    target: TargetSpec | tuple,
    steps: int = 256,
    *,
    start: Literal["zeros", "noise"] | Tensor = "noise",
    preset: str | Recipe = "lucid",
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    batch: int | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    mean: float | Sequence[float] | None = None,
    progress: bool | None = None,
    seed: int = 0,
    generator: Callable[[Tensor], Tensor] | None = None,
    latent: Tensor | None = None,
    latent_shape: Sequence[int] | None = None,
    **options: Any,
) -> Maximization:
    """Images that maximise ``target`` by gradient ascent in input space.

    Args:
        model: the network; run on its own device, in eval mode, its parameters frozen for the run (both restored).
            A Keras 3 model on the torch backend works too, with Keras layer names; the images stay channels first
            (``preprocess`` and ``start`` too), the model gets its own layout.
        target: any target of ``ds.explain`` but the predicted class: an :class:`Objective` (``logit(c)``,
            ``channel(layer, c)``, ``neuron(layer, c, y, x)``, ``channels(layer)``, ``probability(c)``, or a
            weighted sum of them), a ``ds.Unit``, a callable on the output; an int is a class logit, ``(layer, c)``
            a channel.
        steps: optimisation steps.
        start: ``"zeros"`` (the data's mean, the zero of the model's input), ``"noise"`` (random around the mean,
            seeded) or an image ``[C, H, W]`` / ``[B, C, H, W]`` in [0, 1].
        preset: ``"lucid"`` (default), ``"simonyan"``, ``"yosinski"``, or a :class:`Recipe`.
        size: image height and width (an int for square); default the start image's, else the model's first
            Linear layer's (an MLP on flattened images), else 128, else the first of :data:`COMMON_SIZES` the model
            runs on.
        channels: image channels (default the start image's, else the model's first convolution's
            ``in_channels``, else 3).
        batch: how many images (default 1, or what the objective needs: ``channels(layer)`` gives one per channel).
        preprocess: maps an image in [0, 1] to the model's input (e.g. the training normalisation).
        mean: the data's mean pixel in [0, 1] (one number or one per channel): the image's zero, where starts are
            centred, the decay pulls to and clipping sets pixels to. Default: the image ``preprocess`` maps to 0
            when it is a normalisation (any per-channel affine map), else mid grey (0.5).
        progress: show a tqdm bar; ``None`` shows it on a terminal only.
        seed: seeds the start noise (or latent), and the random transforms.
        generator: optimise the latent code ``z`` of this callable (e.g. a GAN's generator) instead of pixels:
            ``generator(z)`` must return images ``[B, C, H, W]`` in [0, 1]; the gradient flows through it, and a
            module's parameters stay frozen (and its mode restored). The recipe's ``param`` is then unused.
        latent: with ``generator``, the starting latent codes ``[B, ...]``.
        latent_shape: with ``generator``, instead of ``latent``: start from ``N(0, 1)`` codes of this shape.
        **options: fields of :class:`Recipe` overriding the preset (``param="pixel"``, ``lr=0.1``, ``decay=...``).

    Returns:
        A :class:`Maximization`: ``images`` ``[B, C, H, W]`` in [0, 1], the objective's ``history``, ``figure()``,
        ``to_records(tag, step)``; with a generator, ``latents``.
    """
    model = probe.torch_model(model)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise BadInputError(f"steps={steps!r}; give a positive number of steps.")
    objective = as_objective(target)
    recipe = _recipe(preset, options)
    if isinstance(start, str) and start not in ("zeros", "noise"):
        raise BadInputError(f"start={start!r}; use 'zeros', 'noise' or an image tensor in [0, 1].")
    check_layers(model, objective.layers)
    rng = torch.Generator().manual_seed(seed)
    device = probe.model_device(model)
    z = None
    model_side: int | None = None
    if generator is not None:
        z, first = _latent_start(generator, latent, latent_shape, start, recipe, size, channels, rng)
        channels, height, width = (int(n) for n in first.shape[1:])
    else:
        if latent is not None or latent_shape is not None:
            raise BadInputError("latent and latent_shape are the start of a generator's code; pass generator= too.")
        model_channels, model_side = model_input(model)
        height, width = _image_size(size, start, model_side)
        if channels is None:
            channels = int(start.shape[-3]) if isinstance(start, Tensor) and start.ndim >= 3 else model_channels or 3
        first = _start_tensor(start, channels, (height, width)) if isinstance(start, Tensor) else None
    zero = data_mean(preprocess, mean, channels, (height, width), device)
    preprocess = preprocess or (lambda x: x)
    transform = compose(standard_transforms() if recipe.transforms is None else recipe.transforms)
    look = _Look(model, objective, transform, preprocess, zero)

    with probe.preserved(model), _frozen(generator):
        _freeze(model)
        if generator is None and size is None and first is None and model_side is None:
            height, width = look.fit_size(channels, height)
        count = _batch_size(look, batch, first, (channels, height, width), size)
        labels = objective.labels(count)
        if generator is not None and z is not None:
            image: PixelImage | FourierImage | LatentImage = LatentImage(generator, z, device)
        else:
            image = _parameterisation(recipe, start, first, (count, channels, height, width), zero, rng, device)
        history = _ascend(look, image, recipe, steps, rng, progress, labels)
        images = image().detach().cpu()
    return Maximization(
        images=images,
        history=history,
        labels=labels,
        objective=objective.name,
        recipe=recipe,
        latents=image.latent.detach().cpu() if isinstance(image, LatentImage) else None,
    )


def _freeze(module: nn.Module) -> None:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)


@contextlib.contextmanager
def _frozen(generator: object) -> Iterator[None]:
    """A generator that is a module runs in eval mode with frozen parameters; both are restored afterwards."""
    if not isinstance(generator, nn.Module):
        yield
        return
    with probe.preserved(generator):
        _freeze(generator)
        yield


# A generator's latent code -------------------------------------------------------------------------------------------


class LatentImage:
    """Images ``generator(latent)``: the optimiser changes the latent code, the gradient flows through the generator
    (Nguyen et al. 2016's optimisation in a generative network's latent space)."""

    def __init__(self, generator: Callable[[Tensor], Tensor], latent: Tensor, device: torch.device) -> None:
        self.generator = generator
        self.device = device
        self.latent = latent.detach().clone().requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.latent]

    def __call__(self) -> Tensor:
        return self.generator(self.latent).to(self.device)

    def project(self) -> None:
        """Nothing to do: the generator's output is an image."""


def _latent_start(
    generator: Callable[[Tensor], Tensor],
    latent: Tensor | None,
    latent_shape: Sequence[int] | None,
    start: object,
    recipe: Recipe,
    size: int | tuple[int, int] | None,
    channels: int | None,
    rng: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The starting latent code and its images, checked before any optimisation."""
    if not callable(generator):
        raise BadInputError(f"generator must be a callable mapping latent codes to images, not {type(generator)}.")
    if isinstance(start, Tensor):
        raise BadInputError("with generator=, the start is a latent code: pass latent= instead of start=.")
    if recipe.blur_every or recipe.clip_norm or recipe.clip_contribution:
        raise BadInputError("blur_every, clip_norm and clip_contribution change pixels; they can't with generator=.")
    if (latent is None) == (latent_shape is None):
        raise BadInputError("with generator=, pass either latent= (a tensor [B, ...]) or latent_shape= (its shape).")
    if latent is None:
        shape = tuple(latent_shape)  # type: ignore[arg-type]
        if not shape or not all(isinstance(n, int) and n > 0 for n in shape):
            raise BadInputError(f"latent_shape={latent_shape!r}; give positive ints, batch first.")
        weights = next(iter(generator.parameters()), None) if isinstance(generator, nn.Module) else None
        z = torch.randn(shape, generator=rng).to(weights.device if weights is not None else "cpu")
    elif not isinstance(latent, Tensor) or latent.ndim < 1 or not latent.is_floating_point():
        raise BadInputError("latent must be a floating-point tensor [B, ...] of latent codes, batch first.")
    else:
        z = latent.detach()
    try:
        with torch.no_grad():
            images = generator(z)
    except Exception as error:
        raise BadInputError(
            f"generator failed on a latent code of shape {tuple(z.shape)}: {error}. Pass a latent (or latent_shape) "
            "the generator accepts."
        ) from error
    wanted = (len(z), channels, *((size, size) if isinstance(size, int) else size or (None, None)))
    got = tuple(images.shape) if isinstance(images, Tensor) else None
    if got is None or len(got) != 4 or any(w is not None and w != g for w, g in zip(wanted, got)):
        shape = "B, C, H, W" if got is None or len(got) != 4 else ", ".join(str(w or "?") for w in wanted)
        raise BadInputError(
            f"generator output shape mismatch: generator(latent) gave {got if got else type(images).__name__}, "
            f"expected images [{shape}] (one per latent code, and the size and channels asked for)."
        )
    if images.min() < 0 or images.max() > 1:
        raise BadInputError("generator(latent) must give images in [0, 1]: end it with a sigmoid, or rescale tanh.")
    return z, images.detach()


@dataclass
class _Look:
    """The model, objective, transforms and preprocessing one ascent runs; ``shapes`` checks them on the mean image."""

    model: nn.Module
    objective: Objective
    transform: Transform
    preprocess: Callable[[Tensor], Tensor]
    zero: Tensor

    def scores(self, pixels: Tensor, generator: torch.Generator) -> Tensor:
        seen = self.preprocess(self.transform(pixels, generator))
        return self.objective(forward_until(self.model, seen, self.objective.layers))

    def shapes(self, shape: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
        """The output shapes of the layers the objective reads, for one mean image of ``shape``."""
        image = self.zero.expand(1, *shape)
        with torch.no_grad():
            seen = self.preprocess(self.transform(image, torch.Generator().manual_seed(0)))
            found = forward_until(self.model, seen, self.objective.layers)
        return {name: tuple(t.shape) for name, t in found.items()}

    def fit_size(self, channels: int, side: int) -> tuple[int, int]:
        """``side`` if the model runs on it, else the first of :data:`COMMON_SIZES` it runs on."""
        try:
            self.shapes((channels, side, side))
            return side, side
        except BadInputError as error:
            failure = error
        for candidate in COMMON_SIZES:
            try:
                self.shapes((channels, candidate, candidate))
            except BadInputError:
                continue
            return candidate, candidate
        raise BadInputError(
            f"{type(self.model).__name__} runs on none of the image sizes tried ({side}, "
            f"{', '.join(map(str, COMMON_SIZES))}) with {channels} channels: {failure} Pass size= (the height and "
            "width it was trained on) and channels=. A model with a fixed input size also needs transforms that "
            "keep the size: Lucid's stack pads by 12 pixels, so pass transforms=() or one without pad()."
        ) from None


def _batch_size(
    look: _Look,
    batch: int | None,
    first: Tensor | None,
    shape: tuple[int, int, int],
    size: object,
) -> int:
    """One mean image through the model, to check the objective's indices and learn the batch it needs."""
    try:
        shapes = look.shapes(shape)
    except BadInputError as error:
        told = "given" if size is not None or first is not None else "inferred"
        raise BadInputError(
            f"{error} maximize() made images of {shape[0]} channels, {shape[1]} x {shape[2]} pixels ({told}): pass "
            "channels= and size= as the model was trained (its transforms change the size: pad() adds a border)."
        ) from None
    objective = look.objective
    needed = objective.check(shapes)
    given = [n for n in (batch, None if first is None or len(first) == 1 else len(first)) if n is not None]
    for n in given:
        if needed is not None and n != needed:
            raise BadInputError(f"{objective.name} needs a batch of {needed} images (one per unit), not {n}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadInputError(f"batch={n!r}; give a positive number of images.")
    if len(set(given)) > 1:
        raise BadInputError(f"batch={batch} but start holds {len(first)} images; give one or the other.")  # type: ignore[arg-type]
    return needed or (given[0] if given else 1)


def _parameterisation(
    recipe: Recipe,
    start: str | Tensor,
    first: Tensor | None,
    shape: tuple[int, int, int, int],
    zero: Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> PixelImage | FourierImage:
    if first is not None:
        image = first.expand(shape).to(device)
        if recipe.param == "pixel":
            return PixelImage(image)
        return FourierImage.from_image(image, decorrelate=recipe.decorrelate)
    sd = 0.0 if start == "zeros" else noise_sd(recipe.param)
    if recipe.param == "fourier":
        return FourierImage.random(shape, sd, generator, device, decorrelate=recipe.decorrelate, centre=zero)
    return PixelImage(zero + (sd * torch.randn(shape, generator=generator)).to(device))


def _ascend(
    look: _Look,
    image: PixelImage | FourierImage | LatentImage,
    recipe: Recipe,
    steps: int,
    generator: torch.Generator,
    progress: bool | None,
    labels: list[str],
) -> Tensor:
    optimizer: torch.optim.Optimizer
    if recipe.optimizer == "adam":
        optimizer = torch.optim.Adam(image.parameters(), lr=recipe.lr)
    else:
        optimizer = torch.optim.SGD(image.parameters(), lr=recipe.lr)
    history = []
    objective, zero = look.objective, look.zero
    redirected_steps = recipe.redirect_relu or _redirect_if_dead(look, image, generator, labels)
    anchor = image().detach() if recipe.centre_bias else None
    growing = round(float(recipe.centre_bias) * steps)
    bar = tqdm(
        range(steps), desc="maximizing", unit="step", disable=None if progress is None else not progress, leave=False
    )
    for step in bar:
        optimizer.zero_grad()
        pixels = image()
        if anchor is not None and step < growing:
            # outside the central region the model sees the start image, so no gradient reaches those pixels
            mask = centre_mask(pixels.shape[-2:], CENTRE_START + (1 - CENTRE_START) * step / growing, pixels.device)
            pixels = anchor + mask * (pixels - anchor)
        redirect = redirect_relus() if step < redirected_steps else contextlib.nullcontext()
        with redirect:
            scores = look.scores(pixels, generator)
        if scores.ndim != 1 or len(scores) != len(pixels):
            raise BadInputError(f"{objective.name} gave scores of shape {tuple(scores.shape)}; expected one per image.")
        loss = -scores.sum()
        if recipe.decay:
            loss = loss + 0.5 * recipe.decay * (pixels - zero).pow(2).sum()
        loss.backward()
        if isinstance(image, PixelImage):
            before = image.pixels.detach().clone() if recipe.clip_contribution else image.pixels
            optimizer.step()
            image.project()
            _pixel_regularisers(image, before, recipe, step, zero)
        else:
            optimizer.step()
        history.append(scores.detach().cpu())
        if step % 16 == 0:
            bar.set_postfix(objective=f"{float(scores.detach().mean()):.3g}")
    result = torch.stack(history)
    # only once steps past the redirected ones had a chance to move a unit that redirection had not turned on
    moved = steps <= max(1, redirected_steps)
    unmoved = [label for label, column in zip(labels, result.T) if not moved and bool((column == column[0]).all())]
    if unmoved:
        warnings.warn(
            f"the objective of {', '.join(unmoved)} never changed in {steps} steps: the unit is off for every image "
            "tried (its ReLU passes no gradient), so the image is the start's, not what the unit responds to. "
            "Try redirect_relu= more steps, another start, or check it with dead_units() over data.",
            stacklevel=3,
        )
    return result


def _redirect_if_dead(
    look: _Look, image: PixelImage | FourierImage | LatentImage, generator: torch.Generator, labels: list[str]
) -> int:
    """:data:`DEAD_START_REDIRECT` (with a warning) if the objective's gradient is zero for a start image, else 0.

    The first step's random transform is drawn from a copy of ``generator``, so the ascent sees the same one.
    """
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    pixels = image()
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(look.scores(pixels, copy).sum(), pixels, allow_unused=True)
    dead = [True] * len(labels) if gradient is None else (gradient.flatten(1).abs().amax(1) == 0).tolist()
    if not any(dead):
        return 0
    names = ", ".join(label for label, off in zip(labels, dead) if off)
    warnings.warn(
        f"the objective has no gradient at the start for {names} (its ReLUs are off for the start image, which would "
        f"stay as it is): using Lucid's redirected ReLU for the first {DEAD_START_REDIRECT} steps "
        f"(redirect_relu={DEAD_START_REDIRECT}); pass redirect_relu= to choose the number of steps.",
        stacklevel=4,
    )
    return DEAD_START_REDIRECT


def centre_mask(shape: Sequence[int], fraction: float, device: torch.device | str = "cpu") -> Tensor:
    """``[H, W]``: 1 in the central rectangle whose sides are ``fraction`` of the image's (at least 1 pixel), else 0."""
    mask = torch.zeros(*shape, device=device)
    height, width = (max(1, round(fraction * n)) for n in shape)
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    mask[top : top + height, left : left + width] = 1
    return mask


@torch.no_grad()
def _pixel_regularisers(image: PixelImage, before: Tensor, recipe: Recipe, step: int, zero: Tensor) -> None:
    """Yosinski et al.'s regularisers, applied to the pixels after a step; ``zero`` is the data's mean."""
    pixels = image.pixels
    if recipe.blur_every and (step + 1) % recipe.blur_every == 0:
        pixels.copy_(gaussian_blur(pixels, recipe.blur_sigma))
    signal = pixels - zero
    if recipe.clip_norm:
        _clip_below(pixels, signal.norm(dim=1), recipe.clip_norm, zero)
    if recipe.clip_contribution:
        # d loss / dx = -d objective / dx + decay (x - mean), so the objective's own gradient is recovered exactly.
        gradient = -(image.pixels.grad - recipe.decay * (before - zero))
        contribution = ((pixels - zero) * gradient).sum(dim=1).abs()
        _clip_below(pixels, contribution, recipe.clip_contribution, zero)


def _clip_below(pixels: Tensor, measure: Tensor, percentile: float, zero: Tensor) -> None:
    """Set each image's pixels whose ``measure`` ``[B, H, W]`` is below its ``percentile`` to the mean ``zero``."""
    threshold = torch.quantile(measure.flatten(1), percentile / 100, dim=1).view(-1, 1, 1)
    clipped = (measure < threshold)[:, None].expand_as(pixels)
    pixels.copy_(torch.where(clipped, zero.expand_as(pixels), pixels))
