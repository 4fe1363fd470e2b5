"""The dataset patches that activate a unit most, with their receptive-field boxes (Zeiler & Fergus, seed 004).

One streaming pass over the data: each unit's response to an image is its largest activation over the feature
map; a running top-k per unit is merged with each batch by ``torch.topk``, and only the images still in some
unit's top-k are kept, so memory stays bounded by ``k x units`` images whatever the data set's size. The forward
pass stops at the layer: the rest of the network is never run. A layer without spatial axes (a Linear layer's
``[N, C]``, a classifier's output) has units that see the whole input: their "patch" is the whole image.

:meth:`TopPatches.projections` adds Zeiler & Fergus's picture beside the patches: each top input's deconvnet
projection of the unit's feature map, cropped to the same receptive field.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, concat, fetch, on_ray
from ..engine import run as run_job
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure, to_image_array
from ..track.records import Image
from .receptive_field import ReceptiveField, receptive_field


@dataclass
class TopPatches(FigureDisplay):
    """The ``k`` inputs (and patches of them) that activate each unit of a layer most.

    Attributes:
        layer: the layer's name.
        units: ``[U]`` the channels searched.
        values: ``[U, k]`` each unit's top activations (the maximum over its feature map), largest first.
        indices: ``[U, k]`` the positions of those inputs in the data, in the order it was read.
        positions: ``[U, k, 2]`` where in the feature map (row, column) each maximum was (``(0, 0)`` for a layer
            without spatial axes).
        boxes: ``[U, k, 4]`` the receptive field of that position, ``(top, left, bottom, right)`` in input
            pixels, clipped at the border, end excluded.
        field: the layer's :class:`~deepscope.features.receptive_field.ReceptiveField` (for a layer without
            spatial axes, one position that sees the whole input, ``method="whole input"``).
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

    def projections(
        self, model: nn.Module, unit: int | None = None, signal: str = "map", method: str = "deconvnet"
    ) -> PatchProjections:
        """Zeiler & Fergus's figure for one unit (default: the first searched): each top patch beside the deconvnet
        projection of the unit, both cropped to the unit's receptive field.

        Args:
            model: the network these patches came from (as it was searched: same weights, ``eval()`` mode).
            unit: a searched channel.
            signal: what is projected from each top input: ``"map"``, the unit's whole feature map with every other
                channel zero (seed 004, ``Unit(layer, unit, signal="map")``), or ``"max"``, only its strongest
                activation, the one the patch is cut around, every other activation of the layer zero (the
                gradient of ``Unit(layer, unit, position)`` scaled by the activation).
            method: the backward rule, a gradient method of :func:`deepscope.explain` (``"deconvnet"``;
                ``"guided_backprop"`` and ``"saliency"`` for comparison).

        Returns:
            :class:`PatchProjections`: ``projections`` of the whole inputs, ``pairs()`` of crops, ``figure()``.
        """
        from ..explain import explain
        from ..targets import Unit

        if signal not in ("map", "max"):
            raise BadInputError(
                f"signal={signal!r}; project the unit's feature map ('map') or its strongest activation ('max')."
            )
        if unit is None:
            unit = int(self.units[0])
        row = self._row(unit)
        indices = self.indices[row]
        inputs = torch.stack([self.images[int(i)] for i in indices])
        if signal == "map":
            targets = [Unit(self.layer, unit, signal="map")]
            batches = [inputs]
            scales = [1.0]
        else:  # each input's own strongest position: one explanation per input, whose signal is 1 there
            spatial = self.field.method != WHOLE_INPUT
            targets = [Unit(self.layer, unit, tuple(p) if spatial else None) for p in self.positions[row].tolist()]
            batches = [x[None] for x in inputs]
            scales = self.values[row].tolist()  # the rules are linear in a positive signal: project the activation
        projected = []
        for x, target, scale in zip(batches, targets, scales, strict=True):
            attribution = explain(model, x, method=method, target=target).attribution
            if attribution is None:
                raise BadInputError(f"method {method!r} gives no per-pixel attribution to project; use 'deconvnet'.")
            projected.append(attribution * scale)
        return PatchProjections(
            layer=self.layer,
            unit=unit,
            signal=signal,
            method=method,
            indices=indices.clone(),
            values=self.values[row].clone(),
            boxes=self.boxes[row].clone(),
            inputs=inputs,
            projections=torch.cat(projected),
        )

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


@dataclass
class PatchProjections(FigureDisplay):
    """A unit's top dataset patches beside their deconvnet projections (Zeiler & Fergus 2014, Fig. 2; seed 004).

    Attributes:
        layer, unit: the unit.
        signal: ``"map"`` (the unit's feature map was projected) or ``"max"`` (its strongest activation).
        method: the backward rule (``"deconvnet"``).
        indices, values, boxes: ``[k]``, ``[k]``, ``[k, 4]``: the top inputs' data positions, the unit's
            response to each, and the receptive-field box ``(top, left, bottom, right)`` the patch is cut from.
        inputs: ``[k, C, H, W]`` the top inputs.
        projections: ``[k, C, H, W]`` each input's projection down to pixel space (signed, as computed).
    """

    layer: str
    unit: int
    signal: str
    method: str
    indices: Tensor
    values: Tensor
    boxes: Tensor
    inputs: Tensor
    projections: Tensor

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        """``(patch, projection)`` per top input, strongest first, both ``[C, h, w]`` cropped to its box."""
        return [
            (image[:, top:bottom, left:right], projection[:, top:bottom, left:right])
            for image, projection, (top, left, bottom, right) in zip(
                self.inputs, self.projections, self.boxes.tolist(), strict=True
            )
        ]

    def figure(self) -> NotebookFigure:
        """The projections in a grid (grey is zero, each scaled by its largest magnitude), beside the patches."""
        pairs = self.pairs()
        k = len(pairs)
        side = math.ceil(math.sqrt(k))
        figure = new_figure(2 * side * 1.6, side * 1.7 + 0.6)
        left, right = figure.subfigures(1, 2)
        left.suptitle(f"{self.method} projections", fontsize=9)
        right.suptitle("top patches", fontsize=9)
        for column, panel in enumerate((left, right)):
            axes = panel.subplots(side, side, squeeze=False).flat
            for ax in axes:
                ax.set_axis_off()
            for j, (ax, (patch, projection)) in enumerate(zip(panel.axes, pairs)):
                picture = projection_image(projection) if column == 0 else to_image_array(patch)
                ax.imshow(picture, vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"#{int(self.indices[j])}: {float(self.values[j]):.2g}", fontsize=7)
        what = "feature map" if self.signal == "map" else "strongest activation"
        figure.suptitle(f"{self.layer}, unit {self.unit}: top {k} patches and their {what} projected", fontsize=10)
        return figure


def projection_image(projection: Tensor) -> np.ndarray:
    """A signed projection ``[C, h, w]`` as an RGB array in [0, 1]: zero is grey, ``+-`` its largest magnitude
    is white / black (Zeiler & Fergus show each projection contrast-normalised like this)."""
    values = projection.detach().float().cpu()
    if values.shape[0] not in (1, 3):
        values = values.sum(dim=0, keepdim=True)
    peak = values.abs().max()
    scaled = 0.5 + 0.5 * values / peak if peak > 0 else torch.full_like(values, 0.5)
    array = scaled.permute(1, 2, 0).numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


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
    engine: Engine | None = None,
    input_column: str = "image",
    ray: RayOptions | None = None,
) -> TopPatches:
    """The ``k`` inputs of ``data`` that activate each of ``units`` most, with the patches under their fields.

    Each batch's per-unit top ``k`` is merged into the running top ``k`` (:mod:`deepscope.engine`), ordered by
    activation and, among equal activations, by the earlier input: the same answer in this process and on Ray.

    Args:
        model: the network; run as given (call ``model.eval()`` first) under ``torch.no_grad``, on its device.
        data: a DataLoader (or any iterable) of ``inputs`` or ``(inputs, labels, ...)`` batches (don't shuffle
            it if you want to look inputs up by index later), a tensor ``[N, C, H, W]``, or a ``ray.data.Dataset``
            with an ``image`` column (``input_column``) and optionally ``id``.
        layer: a name from ``model.named_modules()`` with a 2-D feature map ``[N, C, H, W]``, or a vector
            ``[N, C]`` (a Linear layer, the class scores: each unit sees the whole input); its first call is used
            when a forward pass calls it several times.
        units: the channels to search (one int or several); default: all of them, at once.
        k: how many inputs per unit.
        progress: show a tqdm bar; ``None`` shows it on a terminal only.
        batch_size: items per forward pass.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``.
        input_column: the Ray data set's column of inputs.
        ray: more Ray options (:class:`~deepscope.engine.RayOptions`).

    Returns:
        A :class:`TopPatches` with ``values``, ``indices``, ``positions``, ``boxes``, ``patches(unit)`` and
        ``figure(unit)``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadInputError(f"k={k!r}; pass a positive number of inputs per unit.")
    probe.named_layer(model, layer)
    chosen = None if units is None else torch.as_tensor([units] if isinstance(units, int) else list(units))
    if chosen is not None and (chosen.ndim != 1 or not len(chosen) or chosen.dtype not in (torch.int64, torch.int32)):
        raise BadInputError(f"units={units!r}; pass channel indices (ints).")
    remote = on_ray(engine, data)  # on Ray the top inputs are read again at the end, not carried with every block
    job = Job(
        map=partial(patch_rows, layer=layer, units=chosen, k=k, images=not remote),
        merge=partial(merge_top, k=k),
        combine=partial(merge_top, k=k),
        desc="top patches",
        batch_size=batch_size,
    )
    options = replace(ray or RayOptions(), input_column=input_column)
    rows = run_job(job, model, data, engine, progress, ray=options)
    order = top_order(rows, k)  # [k, U]
    values = torch.from_numpy(np.take_along_axis(rows["value"], order, axis=0))
    indices = torch.from_numpy(rows["id"][order])
    flat = torch.from_numpy(np.take_along_axis(rows["flat"], order, axis=0))
    chosen = torch.as_tensor(rows["unit"][0]).long()
    spatial = bool(rows["spatial"][0])
    kept = np.unique(indices.numpy())
    if remote:
        images = {i: x.float() for i, x in fetch(data, kept.tolist(), batch_size, options).items()}
    else:
        at = {int(i): row for row, i in enumerate(rows["id"])}
        images = {int(i): torch.from_numpy(rows["image"][at[int(i)]]) for i in kept}
    input_shape = tuple(images[int(kept[0])].shape)
    field = receptive_field(model, layer, input_shape) if spatial else _whole_input(layer, input_shape)
    width = field.output_shape[1]
    positions = torch.stack([flat // width, flat % width], dim=-1)  # [k, U, 2]
    boxes = torch.tensor(
        [[field.box(p) for p in row] for row in positions.transpose(0, 1).tolist()], dtype=torch.long
    ).reshape(len(chosen), -1, 4)
    return TopPatches(
        layer=layer,
        units=chosen,
        values=values.t().float(),
        indices=indices.t().long(),
        positions=positions.transpose(0, 1).long(),
        boxes=boxes,
        field=field,
        images=images,
    )


def patch_rows(model: nn.Module, batch: Batch, layer: str, units: Tensor | None, k: int, images: bool = True) -> Rows:
    """The map of :func:`top_patches`: each unit's response (largest activation) to each input of the batch and
    where it was; with the inputs (``images``, in this process, whose merge prunes at once), or without them (on
    Ray, where the actor's ``combine`` prunes a block's rows to each unit's top ``k`` before they travel; the top
    inputs are read again at the end). ``k`` is unused: kept for the callers that pass it."""
    module = probe.named_layer(model, layer)

    def stop(_module: nn.Module, _inputs: object, _output: object) -> None:
        raise _Stop

    x = batch.inputs
    with probe.Hooks() as hooks, torch.no_grad():
        record = probe.capture(hooks, model, layer)
        hooks.add(module.register_forward_hook(stop))  # runs after the capture's hook, registered first
        with contextlib.suppress(_Stop):  # the hook stops the forward pass at the layer
            probe.run(model, x.to(probe.model_device(model)))
        output = record.output()
    chosen = _check(output, layer, units, x)
    everything = len(chosen) == output.shape[1] and bool((chosen == torch.arange(len(chosen))).all())
    picked = output if everything else output[:, chosen.to(output.device)]  # [B, U, positions]; a vector: 1
    response = picked.reshape(*picked.shape[:2], -1).float()
    values, flat = response.max(dim=2)
    rows: Rows = {
        "id": batch.ids.numpy(),
        "value": values.cpu().numpy(),
        "flat": flat.cpu().numpy(),
        "unit": np.broadcast_to(chosen.numpy(), (len(x), len(chosen))).copy(),
        "spatial": np.full(len(x), output.ndim == 4),
    }
    if images:
        rows["image"] = x.detach().cpu().float().numpy()
    return rows


def top_order(rows: Rows, k: int) -> np.ndarray:
    """``[k', U]`` the rows of each unit's top ``k``: largest value first, equal values by the smaller id."""
    values = rows["value"]
    ids = np.broadcast_to(rows["id"][:, None], values.shape)
    return np.lexsort((ids, -values), axis=0)[:k]


def merge_top(merged: Rows | None, rows: Rows, k: int) -> Rows:
    """The merge of :func:`top_patches`: both sets of rows, pruned to those in some unit's top ``k`` in the order
    of :func:`top_order` (largest value first, equal values by the smaller id): exact, the same whatever order the
    rows come in, and at most ``k x units`` rows however many inputs tie (a dead unit's zeros)."""
    both = concat(merged, rows)  # at most k x units rows so far: cheaper than first testing which rows can enter
    if len(both["value"]) <= k:
        return both
    keep = in_top(both["value"], both["id"], k)
    return both if keep.all() else {key: value[keep] for key, value in both.items()}


def in_top(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """``[N]`` whether each row is in some unit's top ``k`` of ``values [N, U]`` in the order of
    :func:`top_order`: the rows above a unit's ``k``-th value, then, of those equal to it, the smallest ids."""
    kth = _kth(values, k)
    above = values > kth
    tied = values == kth
    short = k - above.sum(axis=0)  # [U] how many of the tied rows each unit takes (>= 1)
    crowded = tied.sum(axis=0) > short
    keep = above.any(axis=1) | tied[:, ~crowded].any(axis=1)  # where every tied row has a place, all enter
    for unit in np.flatnonzero(crowded):  # more ties than places: the smallest ids enter
        candidates = np.flatnonzero(tied[:, unit])
        keep[candidates[np.argsort(ids[candidates], kind="stable")[: short[unit]]]] = True
    return keep


def _kth(values: np.ndarray, k: int) -> np.ndarray:
    """``[U]`` each unit's ``k``-th largest value (a partial sort, one thread: a tenth of ``torch.topk``'s CPU
    time on a few hundred rows; which of equal rows it puts there is moot)."""
    return np.partition(values, len(values) - k, axis=0)[len(values) - k]


WHOLE_INPUT = "whole input"
"""The ``method`` of the field of a layer without spatial axes: its one position sees every input pixel."""


def _whole_input(layer: str, input_shape: tuple[int, ...]) -> ReceptiveField:
    """The field of a vector layer's units, as one position of a 1 x 1 map whose box is the whole image."""
    size = tuple(input_shape[1:])
    return ReceptiveField(
        layer=layer, size=size, stride=size, offset=(0, 0), input_shape=size, output_shape=(1, 1), method=WHOLE_INPUT
    )


def _check(output: Tensor, layer: str, chosen: Tensor | None, inputs: Tensor) -> Tensor:
    if output.ndim not in (2, 4):
        raise BadInputError(
            f"layer {layer!r} outputs shape {tuple(output.shape)}; top patches need a 2-D feature map "
            "[N, C, H, W] (a convolutional layer) or a vector [N, C] (a Linear layer, whose units see the whole input)."
        )
    if output.ndim == 2 and inputs.ndim != 4:
        raise BadInputError(
            f"the inputs have shape {tuple(inputs.shape)}, not images [N, C, H, W]; the top inputs of a vector "
            f"layer ({layer!r}) are shown as whole images."
        )
    channels = output.shape[1]
    if chosen is None:
        return torch.arange(channels)
    bad = chosen[(chosen < 0) | (chosen >= channels)]
    if len(bad):
        raise BadInputError(f"units {bad.tolist()} are out of range: layer {layer!r} has {channels} channels.")
    return chosen.long()
