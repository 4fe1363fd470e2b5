"""Features of any layer for a whole data set: one streamed pass, pooled per batch, with labels and thumbnails."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, concat, in_id_order, is_ray_dataset
from ..engine import run as run_job
from ..errors import BadInputError
from ..store.records import Embedding

Pool = Literal["avg", "max", "flatten"]
POOLS: tuple[str, ...] = ("avg", "max", "flatten")

# Modules that compute differently in training mode (as in explain): a model in training mode is warned about.
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


@dataclass
class Features:
    """The features of one layer for a data set, one row per item, in the order the data gave them.

    Attributes:
        features: float32 ``[N, D]`` on the CPU (conv maps pooled over their spatial axes, or flattened).
        labels: the data's labels ``[N]`` (long), or ``None`` when the data had none.
        predictions: the model's predicted class ``[N]`` (argmax of its ``[B, K]`` output), or ``None`` when the
            output is not a classifier's.
        thumbnails: uint8 ``[N, h, w]`` (one channel) or ``[N, h, w, 3]``, each image scaled to its own range, or
            ``None`` when the inputs are not images or thumbnails were turned off.
        layer: the layer's name; ``pool``: how its maps were reduced.
    """

    features: Tensor
    labels: Tensor | None = None
    predictions: Tensor | None = None
    thumbnails: np.ndarray | None = field(default=None, repr=False)
    layer: str = ""
    pool: str = "avg"

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to_record(self, tag: str = "embedding", step: int = 0, classes: list[str] | None = None) -> Embedding:
        """An :class:`~deepscope.track.records.Embedding` record for ``run.log_records([...])``.

        Labels and predictions become the record's label columns (``label``, ``prediction``), named by
        ``classes`` when given; thumbnails travel with it for the projector's hover images.
        """

        def names(values: Tensor) -> list[str]:
            return [classes[int(v)] if classes is not None else str(int(v)) for v in values]

        columns = {"label": self.labels, "prediction": self.predictions}
        present = {name: names(values) for name, values in columns.items() if values is not None}
        labels: list[str] | list[list[str]] | None = None
        header: list[str] | None = None
        if len(present) == 1:
            labels = next(iter(present.values()))
            header = list(present)
        elif present:
            header = list(present)
            labels = [list(row) for row in zip(*present.values())]
        return Embedding(
            tag=tag,
            step=step,
            features=self.features.numpy(),
            labels=labels,
            label_header=header,
            thumbnails=self.thumbnails,
        )


def pool_features(output: Tensor, pool: str) -> Tensor:
    """A layer's output ``[B, C, ...]`` as ``[B, D]``: averaged or maxed over its spatial axes, or flattened."""
    if output.ndim <= 2 or pool == "flatten":
        return output.flatten(1)
    axes = tuple(range(2, output.ndim))
    return output.mean(dim=axes) if pool == "avg" else output.amax(dim=axes)


def thumbnails(images: Tensor, size: int) -> np.ndarray | None:
    """Images ``[B, C, H, W]`` (1 or 3 channels) as uint8, the longer side at most ``size``, each to its range."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        return None
    images = images.detach().float()
    height, width = images.shape[2:]
    scale = size / max(height, width)
    if scale < 1:
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = nn.functional.interpolate(images, size=shape, mode="bilinear", antialias=True, align_corners=False)
    flat = images.flatten(1)
    low, high = flat.amin(dim=1)[:, None, None, None], flat.amax(dim=1)[:, None, None, None]
    scaled = ((images - low) / (high - low).clamp(min=1e-12) * 255).round().clamp(0, 255).to(torch.uint8)
    scaled = scaled.permute(0, 2, 3, 1).cpu().numpy()
    return scaled[..., 0] if scaled.shape[3] == 1 else scaled


def embed(
    model: nn.Module,
    data: object,
    layer: str,
    pool: Pool = "avg",
    progress: bool | None = None,
    device: torch.device | str | None = None,
    max_items: int | None = None,
    batch_size: int = 256,
    thumbnail_size: int | None = 32,
    engine: Engine | None = None,
    input_column: str = "image",
    ray: RayOptions | None = None,
) -> Features:
    """The features of ``layer`` for every item of ``data``, with its labels, the model's predictions and thumbnails.

    The data is streamed once through the model under ``torch.no_grad``; a hook pools the layer's output as soon as
    it is produced, so no activation map outlives its batch. The model runs as given (call ``model.eval()`` first;
    a model in training mode is warned about) and is left as found: hook removed, modes and flags restored.

    Args:
        model: any ``nn.Module`` that takes one tensor, or a Keras 3 model on the torch backend (its inputs in its
            own layout, e.g. ``[N, H, W, C]``; its layers named as in Keras). On Ray also a factory: a callable
            without arguments that builds the model on each actor.
        data: a tensor ``[N, ...]``, an ``(inputs, labels)`` pair of tensors (both split into ``batch_size``
            batches), a DataLoader / iterable yielding ``(inputs, labels, ...)`` batches or bare input tensors, or a
            ``ray.data.Dataset`` with columns ``image`` (``input_column``) and optionally ``label`` and ``id``.
        layer: a name from ``model.named_modules()``; a wrong name lists the closest ones.
        pool: ``"avg"`` (global average pooling of conv maps), ``"max"`` (global max pooling) or ``"flatten"``.
            Outputs ``[B, D]`` are kept as they are.
        progress: show a progress bar; ``None`` shows it on a terminal only.
        device: where to run; default: the model's device (on Ray: each actor's GPU, or its CPU).
        max_items: stop after this many items (this process only).
        batch_size: items per forward pass.
        thumbnail_size: longer side of the kept thumbnails in pixels; ``None`` or 0 keeps none.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``
            (:mod:`deepscope.engine`).
        input_column: the Ray data set's column of inputs.
        ray: more Ray options (:class:`~deepscope.engine.RayOptions`: actors, CPUs per actor, columns).

    Returns:
        :class:`Features` with ``features [N, D]``, ``labels``, ``predictions`` and ``thumbnails``, in the data's
        order (on Ray: by the data set's ``id`` column, or its row order).
    """
    if pool not in POOLS:
        raise BadInputError(f"pool={pool!r} is not one of {', '.join(map(repr, POOLS))}.")
    if max_items is not None and max_items < 1:
        raise BadInputError(f"max_items={max_items}; pass a positive number of items, or None for all.")
    if batch_size < 1:
        raise BadInputError(f"batch_size={batch_size}; pass a positive batch size.")
    on_ray = engine == "ray" or (engine is None and is_ray_dataset(data))
    job = Job(
        map=partial(embed_rows, layer=layer, pool=pool, thumbnail_size=thumbnail_size, device=device),
        merge=concat,
        combine=concat,
        desc=f"embedding {layer}",
        batch_size=batch_size,
    )
    options = replace(ray or RayOptions(), input_column=input_column)
    if on_ray and not isinstance(model, nn.Module) and probe.keras_backend(model) is None:
        rows = run_job(job, model, data, engine="ray", progress=progress, ray=options)  # a factory
    else:
        torch_model = probe.torch_model(model)
        probe.named_layer(torch_model, layer)  # a wrong name is reported before any data is read
        if any(m.training and isinstance(m, _MODE_DEPENDENT) for m in torch_model.modules()):
            warnings.warn(
                f"{type(torch_model).__name__} is in training mode: dropout and batch statistics change the features. "
                "Call model.eval() first (deepscope does not change the mode for you).",
                stacklevel=2,
            )
        with probe.preserved(torch_model):
            rows = run_job(job, model, data, engine, progress, max_items, options)
    rows = in_id_order(rows)
    return Features(
        features=torch.from_numpy(rows["features"]),
        labels=torch.from_numpy(rows["label"]).long() if "label" in rows else None,
        predictions=torch.from_numpy(rows["prediction"]).long() if "prediction" in rows else None,
        thumbnails=rows.get("thumbnail"),
        layer=layer,
        pool=pool,
    )


def embed_rows(
    given: object, batch: Batch, layer: str, pool: str, thumbnail_size: int | None, device: torch.device | str | None
) -> Rows:
    """The map of :func:`embed`: one batch's pooled features, predictions, labels and thumbnails, with its ids."""
    model = probe.torch_model(given)
    module = probe.named_layer(model, layer)
    target = torch.device(device) if device is not None else probe.model_device(model)
    pooled: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        # Pooled here, before an in-place op further on (ReLU(inplace=True)) can change the output; a flattened
        # output is a view of it, so it is copied (the pooled ones are new tensors already).
        tensor = probe._first_tensor(output).detach()
        features = pool_features(tensor, pool)
        same = features.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
        pooled.append(features.clone() if same else features)

    inputs = probe.from_model_layout(given, batch.inputs)
    assert isinstance(inputs, Tensor)
    with probe.Hooks() as hooks, torch.no_grad():
        hooks.add(module.register_forward_hook(hook))
        output = probe.run(model, inputs.to(target, non_blocking=True))
    if not pooled:
        raise BadInputError(f"layer {layer!r} was not called in the forward pass; choose a layer that forward() uses.")
    if len(pooled) > 1 and int(batch.ids[0]) == 0:
        warnings.warn(
            f"layer {layer!r} is called {len(pooled)} times per forward pass; keeping its last call.", stacklevel=2
        )
    rows: Rows = {"id": batch.ids.numpy(), "features": pooled[-1].float().cpu().numpy()}
    if output.ndim == 2 and output.shape[1] > 1:
        rows["prediction"] = output.argmax(dim=1).cpu().numpy()
    if batch.labels is not None:
        rows["label"] = batch.labels.numpy()
    if thumbnail_size:
        small = thumbnails(inputs, thumbnail_size)
        if small is not None:
            rows["thumbnail"] = small
    return rows


def as_matrix(features: object, what: str = "features") -> Tensor:
    """``features`` (a :class:`Features`, tensor or array ``[N, D]``) as a float tensor, checked for NaN and inf."""
    if isinstance(features, Features):
        features = features.features
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, Tensor):
        try:
            features = torch.as_tensor(np.asarray(features))
        except (TypeError, ValueError) as error:
            raise BadInputError(f"{what} cannot be read as an [N, D] array: {error}.") from None
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise BadInputError(f"{what} has shape {tuple(features.shape)}; pass an [N, D] matrix, one row per item.")
    if not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise BadInputError(f"{what} has dtype {features.dtype}; pass numbers.")
    features = features.detach().cpu()
    features = features if features.is_floating_point() else features.float()
    bad = int((~torch.isfinite(features)).any(dim=1).sum())
    if bad:
        raise BadInputError(
            f"{what} has NaN or infinite values in {bad} of {features.shape[0]} rows; drop or fix those rows "
            "(features[torch.isfinite(features).all(1)])."
        )
    return features
