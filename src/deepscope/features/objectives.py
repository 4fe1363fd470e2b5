"""What activation maximisation maximises: objectives that compose like Lucent's (``+``, ``-``, scalar ``*``, ``/``).

An :class:`Objective` turns the activations of the layers it needs into one score per image ``[B]``. Factories:

>>> logit(3)                                   # class 3's pre-softmax score (the model's output)
>>> channel("features.relu3", 5)               # the mean of one channel's feature map
>>> neuron("features.relu3", 5, 3, 3)          # one neuron (default: the map's centre)
>>> channels("features.relu3")                 # image b maximises channel b: the whole layer as one batch
>>> channel("layer3", 5) - 0.5 * channel("layer3", 7)

:func:`forward_until` runs a model only as far as the deepest layer an objective needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError

OUTPUT = ""
"""The key of the model's own output in the activations an objective reads ("" is never a layer's name)."""

Activations = Mapping[str, Tensor]
Shapes = Mapping[str, tuple[int, ...]]
Check = Callable[[Shapes], "int | None"]
Indices = int | Sequence[int] | range


class Objective:
    """A score per image from the activations of ``layers``; maximised by :func:`deepscope.features.maximize`.

    ``score(activations)`` returns ``[B]``; ``check(shapes)`` validates indices against the layers' output shapes
    before any optimisation and returns the batch size the objective needs (``None``: any).
    """

    def __init__(
        self,
        score: Callable[[Activations], Tensor],
        layers: Iterable[str],
        name: str,
        checks: Sequence[Check] = (),
        labels: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.score = score
        self.layers = frozenset(layers)
        self.name = name
        self.checks = tuple(checks)
        self._labels = labels

    def __call__(self, activations: Activations) -> Tensor:
        return self.score(activations)

    def check(self, shapes: Shapes) -> int | None:
        """The batch size this objective needs (``None``: any); raises :class:`BadInputError` on a bad index."""
        sizes = {size for size in (check(shapes) for check in self.checks) if size is not None}
        if len(sizes) > 1:
            raise BadInputError(
                f"{self.name} combines batch objectives of different sizes {sorted(sizes)}; each image of the batch "
                "must have one unit from every part."
            )
        return sizes.pop() if sizes else None

    def labels(self, batch: int) -> list[str]:
        """A caption per image: the unit each image maximises."""
        return self._labels(batch) if self._labels else [self.name] * batch

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # Lucent-style arithmetic: objectives add and subtract, scalars weight them.

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(
                lambda a: self(a) + other(a),
                self.layers | other.layers,
                f"{self.name} + {other.name}",
                self.checks + other.checks,
            )
        if isinstance(other, (int, float)):
            return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other:g}", self.checks)
        return NotImplemented

    __radd__ = __add__  # sum([...]) starts from 0

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), self.layers, f"-({self.name})", self.checks, self._labels)

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)):
            return NotImplemented
        return Objective(
            lambda a: weight * self(a), self.layers, f"{weight:g} * {self.name}", self.checks, self._labels
        )

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        if not isinstance(divisor, (int, float)):
            return NotImplemented
        return self * (1.0 / divisor)


# Factories -------------------------------------------------------------------------------------------------------


def _index_list(index: Indices, what: str) -> list[int] | int:
    if isinstance(index, bool):
        raise BadInputError(f"{what} must be an int or a sequence of ints, not a bool.")
    if isinstance(index, int):
        return index
    if (
        isinstance(index, (Sequence, range))
        and not isinstance(index, str)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in index)
    ):
        if not len(index):
            raise BadInputError(f"{what} is an empty sequence; give at least one index.")
        return list(index)
    raise BadInputError(f"{what} must be an int or a sequence of ints, not {index!r}.")


def _check_channels(layer: str, indices: list[int] | int, kind: str) -> Check:
    def check(shapes: Shapes) -> int | None:
        shape = shapes[layer]
        where = "the model's output" if layer == OUTPUT else f"layer {layer!r}"
        if len(shape) < 2:
            raise BadInputError(f"{where} has output shape {shape}; a {kind} needs at least [N, C].")
        count = shape[1]
        for i in [indices] if isinstance(indices, int) else indices:
            if not -count <= i < count:
                plural = "classes" if kind == "class" else f"{kind}s"
                raise BadInputError(f"{kind} {i} is out of range: {where} has {count} {plural} (0..{count - 1}).")
        return None if isinstance(indices, int) else len(indices)

    return check


def _pick(activations: Tensor, indices: list[int] | int) -> Tensor:
    """``[B, ...]`` of each image's unit: the same unit for all, or unit ``indices[b]`` for image ``b``."""
    if isinstance(indices, int):
        return activations[:, indices]
    rows = torch.arange(len(indices), device=activations.device)
    return activations[rows, torch.as_tensor(indices, device=activations.device)]


def _per_image_labels(prefix: str, indices: list[int] | int) -> Callable[[int], list[str]]:
    def labels(batch: int) -> list[str]:
        if isinstance(indices, int):
            return [f"{prefix}[{indices}]"] * batch
        return [f"{prefix}[{i}]" for i in indices]

    return labels


def logit(index: Indices) -> Objective:
    """The model's output ``index`` (a class's pre-softmax score); a sequence gives image ``b`` class ``index[b]``."""
    indices = _index_list(index, "logit index")
    return Objective(
        lambda a: _pick(a[OUTPUT], indices).flatten(1).mean(1) if a[OUTPUT].ndim > 2 else _pick(a[OUTPUT], indices),
        [OUTPUT],
        f"logit[{index}]" if isinstance(indices, int) else f"logits{indices}",
        [_check_channels(OUTPUT, indices, "class")],
        _per_image_labels("logit", indices),
    )


def channel(layer: str, index: Indices) -> Objective:
    """The mean over positions of ``layer``'s channel ``index``; a sequence gives image ``b`` channel ``index[b]``."""
    indices = _index_list(index, "channel")
    return Objective(
        lambda a: _pick(a[layer], indices).reshape(a[layer].shape[0], -1).mean(1),  # a vector's unit: its value
        [layer],
        f"{layer}[{index}]" if isinstance(indices, int) else f"{layer}{indices}",
        [_check_channels(layer, indices, "channel")],
        _per_image_labels(layer, indices),
    )


class _AllChannels(Objective):
    """Image ``b`` maximises channel ``b`` of ``layer``; the batch is the layer's channel count."""

    def __init__(self, layer: str) -> None:
        self.layer = layer

        def score(a: Activations) -> Tensor:
            values = a[layer]
            rows = torch.arange(values.shape[0], device=values.device)
            return values[rows, rows].flatten(1).mean(1)

        def check(shapes: Shapes) -> int:
            shape = shapes[layer]
            if len(shape) < 2:
                raise BadInputError(f"layer {layer!r} has output shape {shape}; channels() needs at least [N, C].")
            return shape[1]

        super().__init__(
            score, [layer], f"{layer}[all channels]", [check], lambda b: [f"{layer}[{c}]" for c in range(b)]
        )


def channels(layer: str) -> Objective:
    """Every channel of ``layer`` at once: image ``b`` of the batch maximises channel ``b`` (one optimisation)."""
    return _AllChannels(layer)


def neuron(layer: str, index: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit of ``layer``'s channel ``index`` at position ``(y, x)`` of its map (default: the centre)."""
    indices = _index_list(index, "channel")
    if not isinstance(indices, int):
        raise BadInputError("neuron() takes one channel; use channel(layer, [..]) for several.")

    def position(shape: Sequence[int]) -> tuple[int, int]:
        return (shape[-2] // 2 if y is None else y, shape[-1] // 2 if x is None else x)

    def score(a: Activations) -> Tensor:
        values = a[layer][:, indices]
        row, col = position(values.shape)
        return values[:, row, col]

    def check(shapes: Shapes) -> None:
        _check_channels(layer, indices, "channel")(shapes)
        shape = shapes[layer]
        if len(shape) != 4:
            raise BadInputError(f"layer {layer!r} has output shape {shape}; neuron() needs a [N, C, H, W] map.")
        row, col = position(shape)
        if not (0 <= row < shape[2] and 0 <= col < shape[3]):
            raise BadInputError(
                f"neuron position ({row}, {col}) is outside layer {layer!r}'s {shape[2]} x {shape[3]} map at this "
                "image size (transforms such as padding included)."
            )

    where = "centre" if y is None and x is None else f"{y}, {x}"
    return Objective(score, [layer], f"{layer}[{index}] at ({where})", [check])


def activation_norm(layer: str) -> Objective:
    """Half the mean squared activation of ``layer``: deep dream's objective, whose gradient is the activation."""
    return Objective(lambda a: 0.5 * a[layer].pow(2).flatten(1).mean(1), [layer], f"|{layer}|^2")


def as_objective(target: Objective | int | str | tuple) -> Objective:
    """A target given loosely: an int is a class logit, ``(layer, c)`` a channel, ``(layer, c, y, x)`` a neuron."""
    if isinstance(target, Objective):
        return target
    if isinstance(target, int) and not isinstance(target, bool):
        return logit(target)
    if isinstance(target, tuple) and target and isinstance(target[0], str):
        if len(target) == 2:
            return channel(*target)
        if len(target) == 4:
            return neuron(*target)
    raise BadInputError(
        f"target {target!r} is not understood; pass an objective (logit(c), channel(layer, c), neuron(layer, c, y, "
        "x), channels(layer), or a sum of them), a class index, or (layer, channel)."
    )


# Running a model as far as needed ------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised from a forward hook once every needed layer has run, so later layers are never computed.

    Deliberately not a ``RuntimeError``: ``probe.run`` turns those into bad-input errors and lets this one by.
    """


def check_layers(model: nn.Module, layers: Iterable[str]) -> None:
    """Raise :class:`LayerNotFoundError` (with close names) for a layer that is not in the model."""
    for name in layers:
        if name != OUTPUT:
            probe.named_layer(model, name)


def forward_until(model: nn.Module, inputs: Tensor, layers: frozenset[str]) -> dict[str, Tensor]:
    """The outputs of ``layers`` (and of the model, for :data:`OUTPUT`), stopping once the last of them has run.

    Each layer's first call in the forward pass counts. Unless the model's output itself is needed, the forward
    pass ends with a private exception raised from the hook of the deepest needed layer.
    """
    needed = layers - {OUTPUT}
    found: dict[str, Tensor] = {}
    with probe.Hooks() as hooks:
        records = {name: probe.capture(hooks, model, name, call=0) for name in needed}
        stop = OUTPUT not in layers

        def hook(_module: nn.Module, _inputs: object, _output: object) -> None:
            if stop and all(record.outputs for record in records.values()):
                raise _Stop

        for name in needed:  # registered after capture's hooks, so they run after the output is recorded
            hooks.add(probe.named_layer(model, name).register_forward_hook(hook))
        try:
            output = probe.run(model, inputs)
        except _Stop:
            pass
        else:
            found[OUTPUT] = output
    for name, record in records.items():
        found[name] = record.output()
    return found
