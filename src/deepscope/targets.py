"""What "target" means, in one place: the scalar per row that an explanation explains and a maximisation raises.

A target maps what one forward pass produced (the model's output, and the outputs of the layers the target
declares it reads) to one score per row. Every kind is an :class:`Objective`, so all of them compose
(``a + 0.5 * b``, ``a - b``, ``-a``, ``a / 2``, ``sum([...])``) and the same object works in ``ds.explain``,
``ds.maximize`` and the evaluation calls (``ds.faithfulness``, ``ds.sanity_check``):

* ``None`` (the predicted class, fixed on the clean inputs), an ``int`` (one class for every input), one class per
  input (a list or a 1-D tensor), or :func:`logit` (the same, captioned ``logit[c]``): a class's score;
* :func:`probability` of any of those (or of any target that reads the output): the same on the softmax;
* a callable from the model's output to one scalar per input (a box coordinate in a regression, say);
* a :class:`Unit` (a channel of an intermediate layer, optionally one position, to see what a neuron looks for)
  and the unit objectives :func:`channel`, :func:`neuron`, :func:`channels`, :func:`activation_norm`.

A target's gradient at its layer is the backward signal that gradient methods send down: a class target sends a
one-hot vector; ``Unit(layer, c)`` sends ``1 / positions`` at every position of channel ``c`` (the gradient of the
channel's mean); ``Unit(layer, c, signal="map")`` sends the channel's feature map itself, every other channel zero,
which is Zeiler & Fergus's projection of a feature map (with ``method="deconvnet"``, their deconvnet).

Rows and inputs: a batch may hold each input once (row ``i`` is input ``i``), repeat the inputs (``k * N`` rows, as
in integrated gradients), hold variants of one input (``of=i``: LIME's perturbations, Score-CAM's masked copies) or
name each row's input (``of=`` a tensor: occlusion's windows, faithfulness's steps). A per-input part of a target
(a class per input, ``channel(layer, [3, 7])``) reads the entry of each row's input; in ``maximize`` row ``b`` is
image ``b``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import probe
from .errors import TargetError

OUTPUT = ""
"""The key of the model's own output among what a target reads ("" is never a layer's name)."""

SIGNALS = ("mean", "map")
"""The backward signals a :class:`Unit` can send from its channel: its mean's gradient, or the map itself."""

Shapes = Mapping[str, tuple[int, ...]]
Check = Callable[[Shapes], "int | None"]
Indices = int | Sequence[int] | range


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


class Reading(Mapping[str, Tensor]):
    """What a target reads from one forward pass: the outputs of its layers (the model's own under :data:`OUTPUT`),
    which input each row belongs to (:attr:`rows`) and the classes predicted on the clean inputs.

    A plain mapping of layer outputs reads as a batch whose row ``b`` is input ``b`` (as in ``maximize``).
    """

    def __init__(
        self,
        outputs: Mapping[str, Tensor],
        of: Rows = None,
        count: int | None = None,
        predicted: Tensor | None = None,
    ) -> None:
        self._outputs = dict(outputs)
        self._of = of
        self._count = count
        self.predicted = predicted

    def __getitem__(self, name: str) -> Tensor:
        return self._outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def replace(self, name: str, value: Tensor) -> Reading:
        """The same reading with ``name``'s output replaced (a probability reads the softmax of the output)."""
        return Reading({**self._outputs, name: value}, self._of, self._count, self.predicted)

    @property
    def size(self) -> int:
        """The number of rows: of the model's output (a 0-d output is one row), else of the first layer's."""
        first = self._outputs[OUTPUT] if OUTPUT in self._outputs else next(iter(self._outputs.values()))
        return int(first.shape[0]) if first.ndim else 1

    @property
    def device(self) -> torch.device:
        return next(iter(self._outputs.values())).device

    @property
    def rows(self) -> Tensor:
        """``[rows]``: the input each row belongs to, on the outputs' device."""
        size, device = self.size, self.device
        if self._count is None and self._of is None:
            return torch.arange(size, device=device)
        return row_inputs(size, self._count or 1, self._of).to(device)


class Objective:
    """A target: one score per row from the outputs of the layers it reads (``layers``; the model's output is
    :data:`OUTPUT`). ``score`` maps a :class:`Reading` (a mapping ``{layer: output}``) to ``[rows]``.

    ``check(shapes)`` validates indices against the layers' output shapes before any score is computed and returns
    the number of inputs the target needs (``None``: any); ``labels(n)`` gives a caption per input.
    """

    def __init__(
        self,
        score: Callable[[Reading], Tensor],
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

    def __call__(self, activations: Mapping[str, Tensor]) -> Tensor:
        reading = activations if isinstance(activations, Reading) else Reading(activations)
        return self.score(reading)

    def check(self, shapes: Shapes) -> int | None:
        """The number of inputs this target needs (``None``: any); raises :class:`TargetError` on a bad index."""
        sizes = {size for size in (check(shapes) for check in self.checks) if size is not None}
        if len(sizes) > 1:
            raise TargetError(
                f"{self.name} combines batch objectives of different sizes {sorted(sizes)}; each image of the batch "
                "must have one unit from every part."
            )
        return sizes.pop() if sizes else None

    def labels(self, batch: int) -> list[str]:
        """A caption per input: the unit or class each one is scored on."""
        return self._labels(batch) if self._labels else [self.name] * batch

    @property
    def needs_prediction(self) -> bool:
        """Whether a part of the target is the predicted class, to be fixed on the clean inputs."""
        return False

    def fixed(self, predicted: Tensor) -> Objective:
        """The same target with the predicted class replaced by ``predicted`` (one class per input)."""
        return self

    def classes(self, count: int, predicted: Tensor | None) -> Tensor | None:
        """The class each input is scored on, where the target is one class's score (else ``None``)."""
        return None

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # Lucent-style arithmetic: targets add and subtract, scalars weight them.

    def __add__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Combination(((1.0, self),), float(other), f"{self.name} + {other:g}")
        part = _operand(other)
        if part is None:
            return NotImplemented
        return Combination(((1.0, self), (1.0, part)), 0.0, f"{self.name} + {part.name}")

    def __radd__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self if other == 0 else self + other  # sum([...]) starts from 0
        part = _operand(other)
        return NotImplemented if part is None else part + self

    def __neg__(self) -> Objective:
        return Combination(((-1.0, self),), 0.0, f"-({self.name})")

    def __sub__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self + (-other)
        part = _operand(other)
        return NotImplemented if part is None else self + (-part)

    def __rsub__(self, other: object) -> Objective:
        return (-self) + other

    def __mul__(self, weight: object) -> Objective:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Combination(((float(weight), self),), 0.0, f"{weight:g} * {self.name}")

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Objective:
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float)):
            return NotImplemented
        return self * (1.0 / divisor)


def _operand(other: object) -> Objective | None:
    """The other side of ``a + b`` as a target, or None when it is not one (so Python tries the reflected op)."""
    if isinstance(other, (Objective, Unit)) or (callable(other) and not isinstance(other, type)):
        return as_target(other)  # type: ignore[arg-type]
    return None


class Combination(Objective):
    """``sum(weight * part) + constant``: what the arithmetic on targets builds."""

    def __init__(self, terms: tuple[tuple[float, Objective], ...], constant: float, name: str) -> None:
        self.terms = terms
        self.constant = constant
        layers = frozenset().union(*(part.layers for _, part in terms))
        checks = tuple(check for _, part in terms for check in part.checks)
        super().__init__(self._score, layers, name, checks)

    def _score(self, reading: Reading) -> Tensor:
        total = sum(weight * part(reading) for weight, part in self.terms)
        return total + self.constant  # type: ignore[return-value]

    def labels(self, batch: int) -> list[str]:  # one part, weighted: its captions
        return self.terms[0][1].labels(batch) if len(self.terms) == 1 else [self.name] * batch

    @property
    def needs_prediction(self) -> bool:
        return any(part.needs_prediction for _, part in self.terms)

    def fixed(self, predicted: Tensor) -> Objective:
        terms = tuple((weight, part.fixed(predicted)) for weight, part in self.terms)
        return Combination(terms, self.constant, self.name)

    def classes(self, count: int, predicted: Tensor | None) -> Tensor | None:
        if len(self.terms) == 1 and self.terms[0][0] > 0:  # a positive multiple of a class's score explains it
            return self.terms[0][1].classes(count, predicted)
        return None


# Class targets ---------------------------------------------------------------------------------------------------


def _not_classes(shape: tuple[int, ...]) -> TargetError:
    return TargetError(
        f"the model's output has shape {shape}, not (N, classes), so a class target does not name one scalar per "
        "input; pass target=<callable output -> (N,) scores>, or output=<key, index or callable> to choose the "
        "(N, classes) tensor in a structured output."
    )


class ClassScore(Objective):
    """A class's score in the model's output ``(N, classes)``.

    ``index`` is one class for every input, one per input (in ``maximize``: per image), or ``None``: the class the
    model predicts for each clean input. With ``positions`` (:func:`logit`) an output map ``(N, classes, ...)``
    scores the class's mean over positions; otherwise any shape but ``(N, classes)`` is an error that suggests a
    callable, so that a tensor that is not the scores is never read as if it were.
    """

    def __init__(self, index: int | Tensor | None, prefix: str = "", positions: bool = False) -> None:
        self.index = index
        self.prefix = prefix
        self.positions = positions
        if index is None:
            name = "predicted"
        elif isinstance(index, int):
            name = f"{prefix}[{index}]" if prefix else str(index)
        else:
            name = f"{prefix or 'classes'}{index.tolist()}"
        super().__init__(self._score, [OUTPUT], name, [self._check])

    def _score(self, reading: Reading) -> Tensor:
        output = reading[OUTPUT]
        if output.ndim < 2 or (output.ndim > 2 and not self.positions):
            raise _not_classes(tuple(output.shape))
        values = output if output.ndim == 2 else output.flatten(2).mean(2)
        if isinstance(self.index, int):
            return values[:, self.index]
        classes = self.index if self.index is not None else reading.predicted
        if classes is None:
            raise TargetError(
                "the predicted class is fixed on clean inputs, and there are none here (maximize starts from "
                "noise); give a class: an int or logit(c)."
            )
        chosen = classes.to(values.device)[reading.rows]
        return values.gather(1, chosen[:, None])[:, 0]

    def _check(self, shapes: Shapes) -> int | None:
        shape = tuple(shapes[OUTPUT])
        if len(shape) < 2 or (len(shape) > 2 and not self.positions):
            raise _not_classes(shape)
        count = shape[1]
        given = [] if self.index is None else [self.index] if isinstance(self.index, int) else self.index.tolist()
        for i in given:
            if not 0 <= i < count:
                raise TargetError(
                    f"target {i} is out of range: the model has {count} outputs, so {count} classes (0..{count - 1})."
                )
        return None if self.index is None or isinstance(self.index, int) else len(self.index)

    def labels(self, batch: int) -> list[str]:
        if self.index is None:
            return ["predicted"] * batch
        classes = [self.index] * batch if isinstance(self.index, int) else self.index.tolist()
        return [f"{self.prefix}[{c}]" if self.prefix else str(c) for c in classes]

    @property
    def needs_prediction(self) -> bool:
        return self.index is None

    def fixed(self, predicted: Tensor) -> Objective:
        return ClassScore(predicted.cpu().long(), self.prefix, self.positions) if self.index is None else self

    def classes(self, count: int, predicted: Tensor | None) -> Tensor | None:
        if self.index is None:
            return None if predicted is None else predicted.clone()
        if isinstance(self.index, int):
            return torch.full((count,), self.index, dtype=torch.long)
        return self.index.clone()


def _class_tensor(spec: Tensor | Sequence[int]) -> Tensor:
    classes = torch.as_tensor(spec)
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise TargetError(f"target holds {classes.dtype} values; class targets are integers.")
    return classes.reshape(-1).long().cpu()


def _indices(index: Indices | Tensor | None, what: str) -> int | Tensor | None:
    """A class or channel index: None, one int, or one per input/image (a sequence, range or 1-D tensor)."""
    if index is None:
        return None
    if isinstance(index, bool):
        raise TargetError(f"{what} must be an int or a sequence of ints, not a bool.")
    if isinstance(index, int):
        return index
    if isinstance(index, Tensor):
        return _class_tensor(index)
    if (
        isinstance(index, (Sequence, range))
        and not isinstance(index, str)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in index)
    ):
        if not len(index):
            raise TargetError(f"{what} is an empty sequence; give at least one index.")
        return torch.tensor(list(index), dtype=torch.long)
    raise TargetError(f"{what} must be an int or a sequence of ints, not {index!r}.")


def logit(index: Indices | Tensor | None) -> Objective:
    """The model's output ``index`` (a class's pre-softmax score; of an output map, its mean over positions); a
    sequence gives input ``b`` class ``index[b]``; ``None`` the predicted class (explain only: it is fixed on the
    clean inputs)."""
    return ClassScore(_indices(index, "logit index"), prefix="logit", positions=True)


class Probability(Objective):
    """A target read on the softmax of the model's output over its classes (axis 1) instead of the output."""

    def __init__(self, inner: Objective) -> None:
        if OUTPUT not in inner.layers:
            raise TargetError(
                f"probability({inner.name}) needs the model's class output, but the target reads only layer(s) "
                f"{', '.join(map(repr, sorted(inner.layers)))}; a unit inside the model has no softmax."
            )
        self.inner = inner
        super().__init__(self._score, inner.layers, f"p({inner.name})", (self._check, *inner.checks))

    def _score(self, reading: Reading) -> Tensor:
        output = reading[OUTPUT]
        self._check({OUTPUT: tuple(output.shape)})
        return self.inner(reading.replace(OUTPUT, output.softmax(dim=1)))

    @staticmethod
    def _check(shapes: Shapes) -> None:
        if len(shapes[OUTPUT]) < 2:
            shape = tuple(shapes[OUTPUT])
            raise TargetError(f"probability needs a (N, classes) output; the model's output has shape {shape}.")

    def labels(self, batch: int) -> list[str]:
        return [f"p({label})" for label in self.inner.labels(batch)]

    @property
    def needs_prediction(self) -> bool:
        return self.inner.needs_prediction

    def fixed(self, predicted: Tensor) -> Objective:
        return Probability(self.inner.fixed(predicted))

    def classes(self, count: int, predicted: Tensor | None) -> Tensor | None:
        return self.inner.classes(count, predicted)


def probability(target: TargetSpec = None) -> Objective:
    """``target`` measured on the softmax of the model's output: for a class (``None``, an int, one per input,
    :func:`logit`), its probability; for a callable, the callable applied to the probabilities."""
    inner = as_target(target)
    return inner if isinstance(inner, Probability) else Probability(inner)


# A callable on the output ------------------------------------------------------------------------------------------


class OutputFunction(Objective):
    """A callable from the model's output to one scalar per row: ``(N,)``, ``(N, 1)``, or 0-d for one row."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn
        super().__init__(self._score, [OUTPUT], getattr(fn, "__name__", "custom"))

    def _score(self, reading: Reading) -> Tensor:
        values = self.fn(reading[OUTPUT])
        if not isinstance(values, Tensor):
            raise TargetError(f"the target callable returned {type(values).__name__}, not a tensor.")
        rows = reading.size
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


# Units inside the model --------------------------------------------------------------------------------------------


def _where(layer: str) -> str:
    return "the model's output" if layer == OUTPUT else f"layer {layer!r}"


def _check_channels(layer: str, indices: int | Tensor, kind: str = "channel") -> Check:
    def check(shapes: Shapes) -> int | None:
        shape = tuple(shapes[layer])
        if len(shape) < 2:
            raise TargetError(f"{_where(layer)} has output shape {shape}; a {kind} needs at least [N, C].")
        count = shape[1]
        for i in [indices] if isinstance(indices, int) else indices.tolist():
            if not 0 <= i < count:
                raise TargetError(
                    f"{kind} {i} is out of range: {_where(layer)} has {count} {kind}s (0..{count - 1}), "
                    f"output shape {shape[1:]} per input (channels first)."
                )
        return None if isinstance(indices, int) else len(indices)

    return check


def _pick(values: Tensor, indices: int | Tensor, reading: Reading) -> Tensor:
    """``[rows, ...]`` of each row's unit: the same unit for all, or unit ``indices[input]`` for each row's input."""
    if isinstance(indices, int):
        return values[:, indices]
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, indices.to(values.device)[reading.rows]]


def _per_input_labels(prefix: str, indices: int | Tensor) -> Callable[[int], list[str]]:
    def labels(batch: int) -> list[str]:
        if isinstance(indices, int):
            return [f"{prefix}[{indices}]"] * batch
        return [f"{prefix}[{i}]" for i in indices.tolist()]

    return labels


def channel(layer: str, index: Indices) -> Objective:
    """The mean over positions of ``layer``'s channel ``index``; a sequence gives input ``b`` channel ``index[b]``."""
    indices = _indices(index, "channel")
    assert indices is not None
    return Objective(
        lambda a: (picked := _pick(a[layer], indices, a)).reshape(picked.shape[0], -1).mean(1),  # a vector: its value
        [layer],
        f"{layer}[{index}]" if isinstance(indices, int) else f"{layer}{indices.tolist()}",
        [_check_channels(layer, indices)],
        _per_input_labels(layer, indices),
    )


def channels(layer: str) -> Objective:
    """Every channel of ``layer`` at once: input ``b`` scores channel ``b`` (one optimisation for the whole layer)."""

    def score(a: Reading) -> Tensor:
        values = a[layer]
        rows = torch.arange(values.shape[0], device=values.device)
        return values[rows, a.rows].flatten(1).mean(1)

    def check(shapes: Shapes) -> int:
        shape = tuple(shapes[layer])
        if len(shape) < 2:
            raise TargetError(f"layer {layer!r} has output shape {shape}; channels() needs at least [N, C].")
        return shape[1]

    return Objective(score, [layer], f"{layer}[all channels]", [check], lambda b: [f"{layer}[{c}]" for c in range(b)])


def _position_check(layer: str, index: int, where: Callable[[Sequence[int]], tuple[int, ...]], what: str) -> Check:
    def check(shapes: Shapes) -> None:
        _check_channels(layer, index)(shapes)
        shape = tuple(shapes[layer])
        position = where(shape)
        if len(position) != len(shape) - 2 or any(not 0 <= p < s for p, s in zip(position, shape[2:])):
            raise TargetError(f"{what} position {position} is outside layer {layer!r}'s map {shape[2:]}.")

    return check


def neuron(layer: str, index: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit of ``layer``'s channel ``index`` at position ``(y, x)`` of its map (default: the centre)."""
    indices = _indices(index, "channel")
    if not isinstance(indices, int):
        raise TargetError("neuron() takes one channel; use channel(layer, [..]) for several.")

    def position(shape: Sequence[int]) -> tuple[int, int]:
        return (shape[-2] // 2 if y is None else y, shape[-1] // 2 if x is None else x)

    def score(a: Reading) -> Tensor:
        values = a[layer][:, indices]
        row, col = position(values.shape)
        return values[:, row, col]

    def check(shapes: Shapes) -> None:
        shape = tuple(shapes[layer])
        if len(shape) != 4:
            raise TargetError(f"layer {layer!r} has output shape {shape}; neuron() needs a [N, C, H, W] map.")
        _position_check(layer, indices, position, "neuron")(shapes)

    where = "centre" if y is None and x is None else f"{y}, {x}"
    return Objective(score, [layer], f"{layer}[{index}] at ({where})", [check])


def activation_norm(layer: str) -> Objective:
    """Half the mean squared activation of ``layer``: deep dream's objective, whose gradient is the activation."""
    return Objective(lambda a: 0.5 * a[layer].pow(2).flatten(1).mean(1), [layer], f"|{layer}|^2")


@dataclass(frozen=True)
class Unit:
    """A unit inside the network: ``channel`` of layer ``layer``'s output ``(N, C, ...)``.

    With ``position`` (one index per spatial axis) the target is that single neuron, else the channel's mean
    (the same score as ``channel(layer, c)``). ``signal="map"`` makes the backward signal at the layer the
    channel's feature map itself, the other channels zero (Zeiler & Fergus's projection of a feature map); its score
    is half the map's squared norm, whose gradient is the map. A unit composes with every other target.
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

    def objective(self) -> Objective:
        """This unit as an :class:`Objective`: its score per row from its layer's output."""
        layer, index, name = self.layer, self.channel, str(self)
        position = None if self.position is None else tuple(self.position)
        if self.signal == "map":  # d/dA of half the squared norm is A itself: the map is the backward signal

            def score(a: Reading) -> Tensor:
                values = a[layer][:, index]
                return 0.5 * values.reshape(values.shape[0], -1).pow(2).sum(dim=1)

            checks = [_check_channels(layer, index)]
        elif position is None:
            return Objective(channel(layer, index).score, [layer], name, [_check_channels(layer, index)])
        else:
            where: tuple[slice | int, ...] = (slice(None), index, *position)

            def score(a: Reading) -> Tensor:
                return a[layer][where]

            checks = [_position_check(layer, index, lambda _shape: position, "unit")]
        return Objective(score, [layer], name, checks)

    # Composition, as for any target.
    def __add__(self, other: object) -> Objective:
        return self.objective() + other

    def __radd__(self, other: object) -> Objective:
        return other + self.objective()  # type: ignore[operator,no-any-return]

    def __sub__(self, other: object) -> Objective:
        return self.objective() - other

    def __rsub__(self, other: object) -> Objective:
        return other - self.objective()  # type: ignore[operator,no-any-return]

    def __neg__(self) -> Objective:
        return -self.objective()

    def __mul__(self, weight: object) -> Objective:
        return self.objective() * weight

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Objective:
        return self.objective() / divisor


TargetSpec = None | int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | Unit | Objective


def as_target(spec: TargetSpec) -> Objective:
    """Any target as an :class:`Objective` (see the module's docstring for the kinds)."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, Unit):
        return spec.objective()
    if spec is None:
        return ClassScore(None)
    if isinstance(spec, bool):
        raise TargetError("target must be a class index, not a bool.")
    if isinstance(spec, int):
        return ClassScore(spec)
    if isinstance(spec, Tensor) or (isinstance(spec, Sequence) and not isinstance(spec, str)):
        try:
            return ClassScore(_class_tensor(spec))  # type: ignore[arg-type]
        except (TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, TargetError):
                raise
            raise TargetError(f"target {spec!r} is not understood: a sequence holds one class per input.") from None
    if callable(spec):
        return OutputFunction(spec)
    raise TargetError(
        f"target of type {type(spec).__name__} is not understood; use None, an int, one int per input, "
        "a callable output -> one scalar per input, ds.Unit(layer, channel), ds.probability(...) or an objective "
        "(ds.objectives.channel(layer, c), ...)."
    )


def layers_of(spec: TargetSpec) -> frozenset[str]:
    """The layers inside the model (not its output) that a target reads."""
    return as_target(spec).layers - {OUTPUT}


class Target:
    """A target resolved for one call on ``count`` inputs: turns a forward pass into one score per row.

    A predicted-class target is fixed the first time it sees the clean inputs' output (``bind``), so that methods
    which later run perturbed inputs (SmoothGrad, integrated gradients, occlusion) keep explaining the same class.
    """

    def __init__(self, spec: TargetSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self.objective = as_target(spec)
        self.unit = spec if isinstance(spec, Unit) else None
        self.fn = spec if isinstance(self.objective, OutputFunction) else None
        self.predicted: Tensor | None = None
        self._checked = False
        index = self.objective.index if isinstance(self.objective, ClassScore) else None
        if isinstance(index, Tensor) and index.numel() != count:
            raise TargetError(
                f"{index.numel()} targets given for {count} inputs; give one class per input, "
                "or a single int for all of them."
            )

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers inside the model whose outputs the target reads (forward passes capture them)."""
        return tuple(sorted(self.objective.layers - {OUTPUT}))

    @property
    def layer(self) -> str | None:
        """The one layer the target reads, or None for the model's output (see :attr:`layers` for several)."""
        return self.layers[0] if len(self.layers) == 1 else None

    @property
    def classes(self) -> Tensor | None:
        """The class explained for each input (``None`` when the target is not one class's score, or before a
        predicted-class target is bound)."""
        return self.objective.classes(self.count, self.predicted)

    @property
    def needs_prediction(self) -> bool:
        return self.objective.needs_prediction

    def measure_probability(self) -> None:
        """Measure this target on the softmax of the output from now on (occlusion's ``probability=True``)."""
        if not isinstance(self.objective, Probability):
            self.objective = Probability(self.objective)

    def bind(self, output: Tensor, activations: Mapping[str, Tensor] | None = None) -> None:
        """Fix the predicted classes from the clean inputs' output, and check the target against the shapes."""
        if self.needs_prediction and self.predicted is None:
            if output.ndim != 2:
                raise _not_classes(tuple(output.shape))
            self.predicted = output.detach().argmax(dim=1).cpu()
        if self._checked:
            return
        shapes = {OUTPUT: tuple(output.shape), **{k: tuple(v.shape) for k, v in (activations or {}).items()}}
        if self.objective.layers <= shapes.keys():
            needed = self.objective.check(shapes)
            if needed is not None and needed != self.count:
                raise TargetError(f"{self.objective.name} scores {needed} inputs (one unit each), not {self.count}.")
            self._checked = True

    def scores(
        self,
        output: Tensor,
        of: Rows = None,
        activations: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """One score per row of a forward pass: ``output`` is the model's, ``activations`` the layers' it reads.

        A batch that repeats the inputs (``k * N`` rows, as in integrated gradients) repeats the targets with it;
        with ``of=i`` every row is a variant of input ``i`` (LIME's perturbations, Score-CAM's masked copies) and
        gets its target; ``rows`` names each row's input.
        """
        reading = Reading({OUTPUT: output, **(activations or {})}, of=of, count=self.count, predicted=self.predicted)
        missing = sorted(self.objective.layers - reading.keys())
        if missing:
            raise TargetError(
                f"the target {self.objective.name} reads layer(s) {', '.join(map(repr, missing))}, which this "
                "computation does not capture; use a gradient method, or a target on the model's output."
            )
        self.bind(output, activations)
        reading.predicted = self.predicted
        values = self.objective(reading)
        if not isinstance(values, Tensor) or values.shape != (reading.size,):
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise TargetError(f"the target {self.objective.name} gave {shape}; it must give one score per row.")
        return values

    def forward(
        self,
        model: nn.Module,
        run: Callable[[Tensor], Tensor],
        inputs: Tensor,
        hooks: probe.Hooks | None = None,
        of: Rows = None,
    ) -> tuple[Tensor, Tensor]:
        """Run ``run(inputs)`` capturing the layers the target reads; return (one score per row, the output).

        The captures are registered on ``hooks`` when given (so a caller's own hooks see the same pass), else
        removed on return.
        """
        with probe.Hooks() as own:
            records = {name: probe.capture(hooks or own, model, name) for name in self.layers}
            output = run(inputs)
            activations = {name: record.output() for name, record in records.items()}
            scores = self.scores(output, of=of, activations=activations)
        return scores, output

    def frozen(self) -> TargetSpec:
        """The target every later model must be asked about: the predicted classes, once bound, in place of
        "predicted" (a randomised or retrained model is asked about the same classes, not its own predictions)."""
        if self.needs_prediction and self.predicted is not None:
            return self.objective.fixed(self.predicted)
        return self.spec

    def describe(self) -> list[str]:
        """A label per input, for figures."""
        objective = self.objective.fixed(self.predicted) if self.predicted is not None else self.objective
        return objective.labels(self.count)
