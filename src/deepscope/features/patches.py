"""The dataset patches that activate a unit most, with their receptive-field boxes (Zeiler & Fergus, seed 004).

One streaming pass over the data: each unit's response to an image is its largest activation over the feature
map; a running top-k per unit is merged with each batch by ``torch.topk``, and only the images still in some
unit's top-k are kept, so memory stays bounded by ``k x units`` images whatever the data set's size. The forward
pass stops at the layer: the rest of the network is never run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure, to_image_array
from ..track.records import Image
from .activations import iter_inputs
from .receptive_field import ReceptiveField, receptive_field


@dataclass
class TopPatches(FigureDisplay):
    """The ``k`` inputs (and patches of them) that activate each unit of a layer most.

    Attributes:
        layer: the layer's name.
        units: ``[U]`` the channels searched.
        values: ``[U, k]`` each unit's top activations (the maximum over its feature map), largest first.
        indices: ``[U, k]`` the positions of those inputs in the data, in the order it was read.
        positions: ``[U, k, 2]`` where in the feature map (row, column) each maximum was.
        boxes: ``[U, k, 4]`` the receptive field of that position, ``(top, left, bottom, right)`` in input
            pixels, clipped at the border, end excluded.
        field: the layer's :class:`~deepscope.features.receptive_field.ReceptiveField`.
        images: the inputs that are in some unit's top-k, by data index (on the CPU).
    """

    layer: str
    units: Tensor
    values: Tensor
    indices: Tensor
    positions: Tensor
    boxes: Tensor
    field: ReceptiveField
    images: dict[int, Tensor]

    def _row(self, unit: int) -> int:
        found = torch.nonzero(self.units == unit).flatten()
        if not len(found):
            raise BadInputError(f"unit {unit} was not searched; searched units: {self.units.tolist()[:20]}...")
        return int(found[0])

    def patches(self, unit: int) -> list[Tensor]:
        """The ``[C, h, w]`` crops of unit ``unit``'s top inputs under its receptive field (smaller at borders)."""
        row = self._row(unit)
        crops = []
        for index, (top, left, bottom, right) in zip(self.indices[row].tolist(), self.boxes[row].tolist()):
            crops.append(self.images[index][:, top:bottom, left:right])
        return crops

    def figure(self, unit: int | None = None) -> NotebookFigure:
        """Zeiler & Fergus's view of one unit (default: the first searched): its top patches in a grid, then the
        whole inputs with boxes."""
        from matplotlib.patches import Rectangle

        if unit is None:
            unit = int(self.units[0])
        row = self._row(unit)
        crops = self.patches(unit)
        k = len(crops)
        side = math.ceil(math.sqrt(k))
        figure = new_figure(2 * side * 1.6, side * 1.7 + 0.5)
        left, right = figure.subfigures(1, 2)
        left.suptitle(f"top {k} patches ({self.field.size[0]} px field)", fontsize=9)
        right.suptitle("whole inputs", fontsize=9)
        for panel, whole in ((left, False), (right, True)):
            axes = np.atleast_1d(panel.subplots(side, side, squeeze=False)).flat
            for ax in axes:
                ax.set_axis_off()
            for j, ax in enumerate(panel.axes[:k]):
                index = int(self.indices[row, j])
                picture = self.images[index] if whole else crops[j]
                ax.imshow(to_image_array(picture), interpolation="nearest")
                if whole:
                    top, left_, bottom, right_ = self.boxes[row, j].tolist()
                    ax.add_patch(
                        Rectangle((left_ - 0.5, top - 0.5), right_ - left_, bottom - top, fill=False, ec="red", lw=1.5)
                    )
                ax.set_title(f"#{index}: {float(self.values[row, j]):.2g}", fontsize=7)
        figure.suptitle(f"{self.layer}, unit {unit}", fontsize=10)
        return figure

    def grid(self, unit: int) -> np.ndarray:
        """Unit ``unit``'s top patches as one uint8 RGB picture: a square grid, strongest first, each patch cut
        from its whole input scaled as a whole (so patches keep their contrast), padded white to the field size."""

        row = self._row(unit)
        crops = []
        for index, (top, left, bottom, right) in zip(self.indices[row].tolist(), self.boxes[row].tolist()):
            crops.append(to_image_array(self.images[index])[top:bottom, left:right])
        height = max(crop.shape[0] for crop in crops) + 1
        width = max(crop.shape[1] for crop in crops) + 1
        side = math.ceil(math.sqrt(len(crops)))
        canvas = np.ones((side * height + 1, side * width + 1, 3), dtype=np.float32)
        for j, crop in enumerate(crops):
            y, x = 1 + (j // side) * height, 1 + (j % side) * width
            canvas[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
        return (canvas * 255).round().astype(np.uint8)

    def to_records(self, tag: str, step: int = 0) -> list[Image]:
        """One :class:`~deepscope.track.records.Image` per unit (its :meth:`grid`), tagged ``tag/<unit>``."""
        return [
            Image(
                tag=f"{tag}/{unit}",
                step=step,
                pixels=self.grid(unit),
                caption=f"{self.layer} unit {unit}: top activations "
                + ", ".join(f"{float(v):.3g}" for v in self.values[row]),
            )
            for row, unit in enumerate(self.units.tolist())
        ]


class _Stop(Exception):
    """Raised by the hook once the layer has produced its output: the rest of the forward pass is skipped."""


def top_patches(
    model: nn.Module,
    data: Iterable[Any] | Tensor,
    layer: str,
    units: Sequence[int] | int | None = None,
    k: int = 9,
    progress: bool | None = None,
    batch_size: int = 64,
) -> TopPatches:
    """The ``k`` inputs of ``data`` that activate each of ``units`` most, with the patches under their fields.

    Args:
        model: the network; run as given (call ``model.eval()`` first) under ``torch.no_grad``, on its device.
        data: a DataLoader (or any iterable) of ``inputs`` or ``(inputs, labels, ...)`` batches (don't shuffle
            it if you want to look inputs up by index later), or a tensor ``[N, C, H, W]``.
        layer: a name from ``model.named_modules()`` with a 2-D feature map ``[N, C, H, W]`` (its first call is
            used when a forward pass calls it several times).
        units: the channels to search (one int or several); default: all of them, at once.
        k: how many inputs per unit.
        progress: show a tqdm bar; ``None`` shows it on a terminal only.
        batch_size: the batch size when ``data`` is a tensor.

    Returns:
        A :class:`TopPatches` with ``values``, ``indices``, ``positions``, ``boxes``, ``patches(unit)`` and
        ``figure(unit)``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadInputError(f"k={k!r}; pass a positive number of inputs per unit.")
    module = probe.named_layer(model, layer)
    chosen = None if units is None else torch.as_tensor([units] if isinstance(units, int) else list(units))
    if chosen is not None and (chosen.ndim != 1 or not len(chosen) or chosen.dtype not in (torch.int64, torch.int32)):
        raise BadInputError(f"units={units!r}; pass channel indices (ints).")
    device = probe.model_device(model)

    def stop(_module: nn.Module, _inputs: object, _output: object) -> None:
        raise _Stop

    values = indices = flat = torch.empty(0)
    images: dict[int, Tensor] = {}
    input_shape: tuple[int, ...] | None = None
    seen = 0
    with probe.Hooks() as hooks, torch.no_grad():
        record = probe.capture(hooks, model, layer)
        hooks.add(module.register_forward_hook(stop))  # runs after the capture's hook, registered first
        for x in iter_inputs(data, batch_size, progress, "top patches"):
            record.outputs.clear()
            with contextlib.suppress(_Stop):  # the hook stops the forward pass at the layer
                probe.run(model, x.to(device))
            output = record.output()
            if input_shape is None:  # the first batch fixes the shapes, so bad input is caught before the long pass
                chosen = _check(output, layer, chosen)
                input_shape = tuple(x.shape[1:])
            response = output[:, chosen.to(output.device)].flatten(2).float()  # [B, U, positions]
            batch_values, batch_flat = response.max(dim=2)
            batch_indices = torch.arange(seen, seen + x.shape[0], device=output.device)[:, None].expand_as(batch_values)
            values = batch_values if not values.numel() else torch.cat([values, batch_values])
            indices = batch_indices if not indices.numel() else torch.cat([indices, batch_indices])
            flat = batch_flat if not flat.numel() else torch.cat([flat, batch_flat])
            values, order = values.topk(min(k, values.shape[0]), dim=0)
            indices, flat = indices.gather(0, order), flat.gather(0, order)
            kept = set(indices.unique().tolist())
            images = {i: image for i, image in images.items() if i in kept}
            for i in kept - images.keys():
                images[i] = x[i - seen].detach().cpu().clone()
            seen += x.shape[0]
    if input_shape is None or chosen is None:
        raise BadInputError("the data yielded no inputs; pass a non-empty DataLoader or tensor.")
    field = receptive_field(model, layer, input_shape)
    width = field.output_shape[1]
    positions = torch.stack([flat // width, flat % width], dim=-1).cpu()  # [k, U, 2]
    boxes = torch.tensor(
        [[field.box(p) for p in row] for row in positions.transpose(0, 1).tolist()], dtype=torch.long
    ).reshape(len(chosen), -1, 4)
    return TopPatches(
        layer=layer,
        units=chosen.cpu(),
        values=values.t().cpu(),
        indices=indices.t().cpu(),
        positions=positions.transpose(0, 1),
        boxes=boxes,
        field=field,
        images=images,
    )


def _check(output: Tensor, layer: str, chosen: Tensor | None) -> Tensor:
    if output.ndim != 4:
        raise BadInputError(
            f"layer {layer!r} outputs shape {tuple(output.shape)}; top patches need a 2-D feature map "
            "[N, C, H, W]: choose a convolutional layer."
        )
    channels = output.shape[1]
    if chosen is None:
        return torch.arange(channels)
    bad = chosen[(chosen < 0) | (chosen >= channels)]
    if len(bad):
        raise BadInputError(f"units {bad.tolist()} are out of range: layer {layer!r} has {channels} channels.")
    return chosen.long()
