"""What "target" means, in one place: the scalar per input that an explanation explains.

A target is ``None`` (the predicted class), an ``int`` (one class for every input), one class per input (a list
or a 1-D tensor), a callable from the model's output to one scalar per input (a box coordinate in a regression,
say), or a :class:`Unit` (a channel of an intermediate layer, optionally one position, to see what a neuron
looks for).

A target's gradient at its layer is the backward signal that gradient methods send down: a class target sends a
one-hot vector; ``Unit(layer, c)`` sends ``1 / positions`` at every position of channel ``c`` (the gradient of the
channel's mean); ``Unit(layer, c, signal="map")`` sends the channel's feature map itself, every other channel zero,
which is Zeiler & Fergus's projection of a feature map (with ``method="deconvnet"``, their deconvnet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import TargetError

SIGNALS = ("mean", "map")
"""The backward signals a :class:`Unit` can send from its channel: its mean's gradient, or the map itself."""


@dataclass(frozen=True)
class Unit:
    """A unit inside the network: ``channel`` of layer ``layer``'s output ``(N, C, ...)``.

    With ``position`` (one index per spatial axis) the target is that single neuron, else the channel's mean.
    ``signal="map"`` makes the backward signal at the layer the channel's feature map itself, the other channels
    zero (Zeiler & Fergus's projection of a feature map); its score is half the map's squared norm, whose gradient
    is the map.
    """

    layer: str
    channel: int
    position: tuple[int, ...] | None = None
    signal: str = "mean"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise TargetError(
                f"Unit signal={self.signal!r} is not one of {', '.join(map(repr, SIGNALS))}: "
                '"mean" explains the channel mean, "map" projects its feature map (Zeiler & Fergus).'
            )
        if self.signal == "map" and self.position is not None:
            raise TargetError(
                f"Unit({self.layer!r}, {self.channel}, position={self.position}, signal='map') asks for one neuron "
                "and for the whole feature map; drop position (the map) or signal (the neuron)."
            )

    def __str__(self) -> str:
        where = "" if self.position is None else f" at {tuple(self.position)}"
        kind = " map" if self.signal == "map" else ""
        return f"{self.layer}[{self.channel}]{kind}{where}"


TargetSpec = None | int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | Unit

Rows = int | Tensor | None
"""Which input each row of a batch stands for: None (the N inputs, repeated k times: row r is input r % N), an
int i (every row a variant of input i), or a tensor naming each row's input."""


def row_inputs(rows: int, count: int, of: Rows = None) -> Tensor:
    """The input (``0..count-1``) each of ``rows`` rows stands for, as ``of`` says (:data:`Rows`); the one place
    the row layouts of the methods (integrated gradients' k*N steps, LIME's variants of one input) are read, by the
    target's scores and by the extra forward arguments alike."""
    if isinstance(of, Tensor):
        return of.long().cpu()
    if of is not None:
        return torch.full((rows,), int(of), dtype=torch.long)
    if rows % count:
        raise TargetError(f"{rows} rows cannot be matched to {count} targets.")
    return torch.arange(rows) % count


class Target:
    """A resolved target: turns a forward pass into one score per input.

    Class targets are fixed the first time they see the clean inputs' output (``bind``), so that methods which
    later run perturbed inputs (SmoothGrad, integrated gradients, occlusion) keep explaining the same class.
    """

    def __init__(self, spec: TargetSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self.classes: Tensor | None = None
        self.fn: Callable[[Tensor], Tensor] | None = None
        self.unit: Unit | None = None
        self.bound = False
        if spec is None:
            pass
        elif isinstance(spec, Unit):
            self.unit = spec
        elif isinstance(spec, bool):
            raise TargetError("target must be a class index, not a bool.")
        elif isinstance(spec, int):
            self.classes = torch.full((count,), spec, dtype=torch.long)
        elif isinstance(spec, Tensor) or (isinstance(spec, Sequence) and not isinstance(spec, str)):
            classes = torch.as_tensor(spec)
            if classes.is_floating_point() or classes.dtype == torch.bool:
                raise TargetError(f"target holds {classes.dtype} values; class targets are integers.")
            classes = classes.reshape(-1).long().cpu()
            if classes.numel() != count:
                raise TargetError(
                    f"{classes.numel()} targets given for {count} inputs; give one class per input, "
                    "or a single int for all of them."
                )
            self.classes = classes
        elif callable(spec):
            self.fn = spec
        else:
            raise TargetError(
                f"target of type {type(spec).__name__} is not understood; use None, an int, one int per input, "
                "a callable output -> one scalar per input, or ds.Unit(layer, channel)."
            )

    @property
    def layer(self) -> str | None:
        """The layer whose output the target reads, or None for the model's output."""
        return self.unit.layer if self.unit else None

    def bind(self, output: Tensor) -> None:
        """Fix the classes (the predicted ones for ``None``) from the clean inputs' output, and check them."""
        if self.fn is not None or self.unit is not None or self.bound:
            return
        if output.ndim != 2:
            raise TargetError(
                f"the model's output has shape {tuple(output.shape)}, not (N, classes), so a class target does "
                "not name one scalar per input; pass target=<callable output -> (N,) scores>, or "
                "output=<key, index or callable> to choose the (N, classes) tensor in a structured output."
            )
        if self.classes is None:
            self.classes = output.detach().argmax(dim=1).cpu()
        classes = output.shape[1]
        bad = (self.classes < 0) | (self.classes >= classes)
        if bad.any():
            raise TargetError(
                f"target {self.classes[bad][0].item()} is out of range: the model has {classes} outputs "
                f"(0..{classes - 1})."
            )
        self.bound = True

    def scores(self, output: Tensor, of: Rows = None) -> Tensor:
        """One score per input: the class's logit, the callable's value, or the unit's activation.

        ``output`` is the model's output, or for a :class:`Unit` the output of its layer. A batch that repeats
        the inputs (``k * N`` rows, as in integrated gradients) repeats the targets with it; with ``of=i`` every
        row is a variant of input ``i`` (LIME's perturbations, Score-CAM's masked copies) and gets its target.
        """
        if self.unit is not None:
            return self._unit_scores(output)
        rows = output.shape[0] if output.ndim else 1  # a 0-d output: one score, for a batch of one
        if self.fn is not None:
            values = self.fn(output)
            if not isinstance(values, Tensor):
                raise TargetError(f"the target callable returned {type(values).__name__}, not a tensor.")
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim == 0 and rows == 1:
                values = values.reshape(1)
            if values.shape != (rows,):
                raise TargetError(
                    f"the target callable returned shape {tuple(values.shape)}; it must return one scalar per "
                    f"input, shape ({rows},)."
                )
            return values
        self.bind(output)
        assert self.classes is not None
        index = self.classes[row_inputs(rows, self.count, of)].to(output.device)
        return output.gather(1, index[:, None])[:, 0]

    def _unit_scores(self, activation: Tensor) -> Tensor:
        assert self.unit is not None
        unit = self.unit
        if activation.ndim < 2 or not 0 <= unit.channel < activation.shape[1]:
            raise TargetError(
                f"unit {unit} is out of range: layer {unit.layer!r} outputs shape {tuple(activation.shape[1:])} "
                "per input (channels first)."
            )
        channel = activation[:, unit.channel]
        if unit.signal == "map":  # d/dA of half the squared norm is A itself: the map is the backward signal
            return 0.5 * channel.reshape(channel.shape[0], -1).pow(2).sum(dim=1)
        if unit.position is None:
            return channel.reshape(channel.shape[0], -1).mean(dim=1)
        position = tuple(unit.position)
        if len(position) != channel.ndim - 1 or any(
            not 0 <= p < s for p, s in zip(position, channel.shape[1:], strict=False)
        ):
            raise TargetError(
                f"position {position} does not fit layer {unit.layer!r}'s spatial shape {tuple(channel.shape[1:])}."
            )
        index: tuple[slice | int, ...] = (slice(None), *position)
        return channel[index]

    def describe(self) -> list[str]:
        """A label per input, for figures."""
        if self.unit is not None:
            return [str(self.unit)] * self.count
        if self.fn is not None:
            return [getattr(self.fn, "__name__", "custom")] * self.count
        if self.classes is None:
            return ["predicted"] * self.count
        return [str(c) for c in self.classes.tolist()]
