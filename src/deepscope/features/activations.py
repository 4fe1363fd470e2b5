"""Activation maps of a layer for an input, and units that never fire over a data set (seed 001).

A unit is a channel of a feature map ``[N, C, *spatial]`` or a neuron of a vector ``[N, F]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, concat
from ..engine import run as run_job
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure

Order = Literal["first", "strongest"]

# The modules whose outputs dead_units watches by default: a unit of a ReLU is dead when it is never positive.
RELU_LIKE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
_CONV_OR_LINEAR: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Activations(FigureDisplay):
    """The output of one layer for some inputs, and how sparse it is.

    Attributes:
        layer: the layer's name.
        maps: the layer's output ``[N, C, *spatial]`` (or ``[N, F]``), on the CPU.
        channels: ``[k]`` the channels :meth:`figure` shows, in order (the first k, or the k strongest).
        order: ``"first"`` or ``"strongest"`` (largest mean activation over the inputs and positions).
        zero_fraction: the fraction of the output's values that are exactly zero (ReLU sparsity).
        channel_zero_fraction: ``[C]`` that fraction per channel.
        channel_mean: ``[C]`` each channel's mean activation over inputs and positions.
    """

    layer: str
    maps: Tensor
    channels: Tensor
    order: str
    zero_fraction: float
    channel_zero_fraction: Tensor
    channel_mean: Tensor

    def figure(self, index: int = 0, cmap: str = "viridis") -> NotebookFigure:
        """The chosen channels' maps for input ``index``, each on its own colour scale, in a grid."""

        if self.maps.ndim < 3:
            raise BadInputError(f"layer {self.layer!r} has no spatial maps to draw (shape {tuple(self.maps.shape)}).")
        if not 0 <= index < self.maps.shape[0]:
            raise BadInputError(f"index={index}, but there are {self.maps.shape[0]} inputs.")
        k = len(self.channels)
        columns = math.ceil(math.sqrt(k))
        rows = math.ceil(k / columns)
        figure = new_figure(1.8 * columns, 1.9 * rows + 0.4)
        axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).flat
        for ax in axes:
            ax.set_axis_off()
        for ax, channel in zip(figure.axes, self.channels.tolist()):
            plane = self.maps[index, channel]
            ax.imshow((plane if plane.ndim == 2 else plane[None]).numpy(), cmap=cmap, interpolation="nearest")
            ax.set_title(f"ch {channel}  max {float(plane.max()):.2g}", fontsize=7)
        figure.suptitle(
            f"{self.layer}: {self.order} {k} of {self.maps.shape[1]} channels, {self.zero_fraction:.0%} zeros",
            fontsize=9,
        )
        return figure


def activations(model: nn.Module, x: Tensor, layer: str, k: int = 16, order: Order = "first") -> Activations:
    """The output of ``layer`` for inputs ``x``, the ``k`` channels to show, and sparsity statistics.

    Args:
        model: the network; run as given (call ``model.eval()`` first) under ``torch.no_grad``.
        x: an input batch ``[N, C, H, W]`` (or one input ``[C, H, W]``).
        layer: a name from ``model.named_modules()``. An in-place ReLU after it does not change what is recorded.
        k: how many channels :meth:`Activations.figure` shows.
        order: ``"first"`` (channels 0..k-1) or ``"strongest"`` (largest mean activation first).

    Returns:
        An :class:`Activations` with ``maps``, ``channels``, ``zero_fraction``, ``channel_mean`` and ``figure()``.
    """
    if order not in ("first", "strongest"):
        raise BadInputError(f"order={order!r}; pass 'first' or 'strongest'.")
    if not isinstance(k, int) or k < 1:
        raise BadInputError(f"k={k!r}; pass a positive number of channels to show.")
    probe.named_layer(model, layer)
    x = _batch(x)
    with probe.Hooks() as hooks, torch.no_grad():
        record = probe.capture(hooks, model, layer)
        probe.run(model, x.to(probe.model_device(model)))
        maps = record.output().detach().float().cpu()
    if maps.ndim < 2:
        raise BadInputError(f"layer {layer!r} outputs shape {tuple(maps.shape)}; it has no channels.")
    per_channel = maps.transpose(0, 1).flatten(1)  # [C, N * positions]
    channel_mean = per_channel.mean(dim=1)
    count = min(k, maps.shape[1])
    strongest = channel_mean.argsort(descending=True, stable=True)
    channels = torch.arange(count) if order == "first" else strongest[:count]
    return Activations(
        layer=layer,
        maps=maps,
        channels=channels,
        order=order,
        zero_fraction=float((maps == 0).float().mean()),
        channel_zero_fraction=(per_channel == 0).float().mean(dim=1),
        channel_mean=channel_mean,
    )


# Dead units -----------------------------------------------------------------------------------------------------


@dataclass
class DeadUnits(FigureDisplay):
    """Units whose activation is never positive over a whole data set.

    Attributes:
        peak: per layer, ``[C]`` each unit's largest activation over every input and position.
        images: how many inputs were seen.
    """

    peak: dict[str, Tensor]
    images: int

    @property
    def dead(self) -> dict[str, Tensor]:
        """Per layer, the indices of the units that never fired (largest activation <= 0)."""
        return {name: torch.nonzero(peak <= 0).flatten() for name, peak in self.peak.items()}

    @property
    def counts(self) -> dict[str, tuple[int, int]]:
        """Per layer, ``(dead units, units)``."""
        return {name: (int((peak <= 0).sum()), peak.numel()) for name, peak in self.peak.items()}

    @property
    def fraction(self) -> float:
        """The fraction of all watched units that are dead."""
        dead = sum(d for d, _ in self.counts.values())
        total = sum(n for _, n in self.counts.values())
        return dead / total if total else 0.0

    def figure(self) -> NotebookFigure:
        """A bar per layer: the fraction of its units that are dead."""

        counts = self.counts
        figure = new_figure(6.0, 0.3 * len(counts) + 1.2)
        ax = figure.subplots()
        names = list(counts)
        ax.barh(range(len(names)), [d / max(n, 1) for d, n in counts.values()], color="tab:grey")
        ax.set_yticks(range(len(names)), [f"{name} ({d}/{n})" for name, (d, n) in counts.items()], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of units never positive")
        ax.set_title(f"dead units over {self.images} inputs: {self.fraction:.1%} in all", fontsize=9)
        return figure


def dead_units(
    model: nn.Module,
    data: Iterable[Any] | Tensor,
    layers: Sequence[str] | None = None,
    progress: bool | None = None,
    batch_size: int = 64,
    engine: Engine | None = None,
    input_column: str = "image",
    ray: RayOptions | None = None,
) -> DeadUnits:
    """The units (channels of a feature map, neurons of a vector) that are never positive over ``data``.

    One pass in constant memory: per unit only its running maximum is kept (merged by ``max`` across batches, in
    this process or on Ray: :mod:`deepscope.engine`).

    Args:
        model: the network; run as given (call ``model.eval()`` first) under ``torch.no_grad``, on its device.
        data: a DataLoader (or any iterable) of ``inputs`` or ``(inputs, labels, ...)`` batches, a tensor
            ``[N, C, H, W]`` cut into batches of ``batch_size``, or a ``ray.data.Dataset`` with an ``image``
            column (``input_column``).
        layers: names from ``model.named_modules()``. Default: every ``nn.ReLU`` / ``nn.ReLU6`` module, or, in a
            model without ReLU modules (one that calls ``F.relu``), every convolution and Linear layer; a unit of
            those is dead when its pre-activation is never positive. A module called several times per forward
            pass (torchvision's Bottleneck reuses one ReLU three times) is reported per call as ``name:call``.
        progress: show a tqdm bar; ``None`` shows it on a terminal only.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``.
        input_column: the Ray data set's column of inputs.
        ray: more Ray options (:class:`~deepscope.engine.RayOptions`).

    Returns:
        A :class:`DeadUnits` with ``peak`` per layer, ``dead`` indices, ``counts`` and ``figure()``.
    """
    names = list(layers) if layers is not None else default_layers(model)
    for name in names:
        probe.named_layer(model, name)
    if not names:
        raise BadInputError(f"{type(model).__name__} has no layers to watch; pass layers=[...].")
    job = Job(map=partial(peak_rows, names=names), merge=merge_peaks, desc="dead units", batch_size=batch_size)
    rows = run_job(job, model, data, engine, progress, ray=replace(ray or RayOptions(), input_column=input_column))
    peak = {key[len(_PEAK) :]: torch.from_numpy(value[0]) for key, value in rows.items() if key.startswith(_PEAK)}
    return DeadUnits(peak=peak, images=int(rows["images"][0]))


_PEAK = "peak:"


def peak_rows(model: nn.Module, batch: Batch, names: list[str]) -> Rows:
    """The map of :func:`dead_units`: one row, each unit's largest activation over the batch per layer (call)."""
    x = _batch(batch.inputs)
    rows: Rows = {"images": np.array([x.shape[0]])}
    with probe.Hooks() as hooks, torch.no_grad():
        records = [probe.capture(hooks, model, name) for name in names]
        probe.run(model, x.to(probe.model_device(model)))
        for record in records:
            calls = len(record.outputs)
            for call, output in enumerate(record.outputs):
                key = record.name if calls == 1 else f"{record.name}:{call}"
                rows[_PEAK + key] = _unit_peak(output, key).numpy()[None]
            record.outputs.clear()
    return rows


def merge_peaks(merged: Rows | None, rows: Rows) -> Rows:
    """The merge of :func:`dead_units`: one row, the images counted and each unit's peak the larger (a unit is
    alive when it fired in any batch)."""
    both = concat(merged, rows)
    return {
        key: value.sum(axis=0, keepdims=True) if key == "images" else value.max(axis=0, keepdims=True)
        for key, value in both.items()
    }


def default_layers(model: nn.Module) -> list[str]:
    """The layers :func:`dead_units` watches by default (see there)."""
    relus = [name for name, m in model.named_modules() if name and isinstance(m, RELU_LIKE)]
    return relus or [name for name, m in model.named_modules() if isinstance(m, _CONV_OR_LINEAR)]


def _unit_peak(output: Tensor, name: str) -> Tensor:
    if output.ndim < 2:
        raise BadInputError(f"layer {name!r} outputs shape {tuple(output.shape)}; it has no units along axis 1.")
    return output.detach().transpose(0, 1).flatten(1).amax(dim=1).float().cpu()


# Data --------------------------------------------------------------------------------------------------------------


def _batch(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise BadInputError(f"x must be a tensor, not {type(x).__name__}.")
    if x.ndim == 3:
        x = x[None]
    if x.ndim < 2 or x.shape[0] == 0:
        raise BadInputError(f"x has shape {tuple(x.shape)}; pass a batch [N, C, H, W] with N > 0 (or one [C, H, W]).")
    return x
