"""What activation maximisation maximises: the targets of :mod:`deepscope.targets`, which compose like Lucent's
objectives (``+``, ``-``, scalar ``*``, ``/``). The same objects are explain's targets. Factories:

>>> logit(3)                                   # class 3's pre-softmax score (the model's output)
>>> channel("features.relu3", 5)               # the mean of one channel's feature map
>>> neuron("features.relu3", 5, 3, 3)          # one neuron (default: the map's centre)
>>> channels("features.relu3")                 # image b maximises channel b: the whole layer as one batch
>>> channel("layer3", 5) - 0.5 * channel("layer3", 7)

:func:`forward_until` runs a model only as far as the deepest layer an objective needs.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from .. import probe
from ..errors import TargetError
from ..targets import (
    OUTPUT,
    Objective,
    TargetSpec,
    Unit,
    activation_norm,
    as_target,
    channel,
    channels,
    logit,
    neuron,
    probability,
)

__all__ = [
    "OUTPUT",
    "Objective",
    "Unit",
    "activation_norm",
    "as_objective",
    "channel",
    "channels",
    "check_layers",
    "forward_until",
    "logit",
    "neuron",
    "probability",
]


def as_objective(target: TargetSpec | tuple) -> Objective:
    """Any target (:func:`deepscope.targets.as_target`), or one given loosely: ``(layer, c)`` a channel,
    ``(layer, c, y, x)`` a neuron. A predicted class needs clean inputs, so it is refused here."""
    if isinstance(target, tuple) and target and isinstance(target[0], str):
        if len(target) == 2:
            return channel(*target)
        if len(target) == 4:
            return neuron(*target)
    if isinstance(target, int) and not isinstance(target, bool):
        return logit(target)  # maximize's class index has always been its logit, captioned logit[c]
    try:
        objective = as_target(target)
    except TargetError as error:
        raise TargetError(
            f"{error} maximize() takes an objective (logit(c), channel(layer, c), neuron(layer, c, y, x), "
            "channels(layer), or a sum of them), a ds.Unit, a class index, or (layer, channel)."
        ) from None
    if objective.needs_prediction:
        raise TargetError(
            f"{objective.name}: the predicted class is fixed on clean inputs, which maximize() does not have; "
            "give a class (an int or logit(c))."
        )
    return objective


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
