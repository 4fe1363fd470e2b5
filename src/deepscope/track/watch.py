"""Histograms of a model's weights, biases, gradients and activations, every N training steps.

:class:`Watcher` hooks a model (through :class:`deepscope.probe.Hooks`, never by changing it) and hands the records
of each recorded step to a sink, a callable that takes a list of :class:`~deepscope.track.records.Histogram` and
:class:`~deepscope.track.records.Scalar`. It knows nothing of where the records go: :class:`deepscope.Run` passes
its own writer as the sink.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import BadInputError
from ..probe import Hooks
from .histogram import check_bins, summarise, unpack
from .records import Histogram, HistogramKind, Scalar

KINDS: tuple[HistogramKind, ...] = ("weight", "bias", "gradient", "activation")
Sink = Callable[[list[Histogram | Scalar]], object]


@dataclass
class _Pending:
    """One summary of the step being recorded, still on its tensor's device."""

    row: Tensor
    count: int
    layer: str
    kind: HistogramKind


class Watcher(contextlib.AbstractContextManager["Watcher"]):
    """Records histograms of a model's parameters, gradients and layer outputs every ``every`` training steps.

    What a step is:
        * By default, each forward pass of ``model`` in training mode with gradients enabled starts a new step;
          the first one is step 0. Forward passes in eval mode or under ``torch.no_grad()`` (validation) do not
          count, and record nothing.
        * ``watcher.step(n)`` says that what follows belongs to step ``n``; after the first call, forward passes no
          longer count, and calling ``step(n)`` again with the same ``n`` stays in that step. This is how to count
          optimizer steps under gradient accumulation: call ``step(n)`` once per micro-batch with the optimizer
          step's number.
        * With ``optimizer=``, each ``optimizer.step()`` ends a step (the first starts when the watcher is made),
          unless ``step(n)`` has taken over the numbering.

    What a recorded step holds (a step is recorded when its number is a multiple of ``every``):
        * ``weight``/``bias``: every parameter as the step starts, i.e. as its forward pass sees it. A parameter
          whose own name contains "bias" is a bias; every other one (including norm layers' scales) a weight.
        * ``gradient``: every parameter's ``.grad`` after the step's last backward pass: read after each
          accumulation into ``.grad`` (``register_post_accumulate_grad_hook``), the last one winning, so with
          several backward passes in one step it is the accumulated gradient; with ``optimizer=`` it is read just
          before ``optimizer.step()``, i.e. exactly what the optimizer applies (after clipping and unscaling).
          Each layer's gradient norm also becomes a :class:`Scalar` ``grad_norm/<layer>`` (NaN if any of the
          layer's gradients holds NaN or ±inf, which the histograms leave out and count).
        * ``activation``: the output of every leaf module (containers are skipped) in the step's first counted
          forward pass. A module called twice in it (a shared ReLU) records each call, the later ones tagged
          ``#1``, ``#2``... as in :func:`deepscope.probe.capture`'s ``call``.

    Each summary is computed by :func:`deepscope.track.histogram.summarise` on the tensor's device as soon as the
    tensor exists, and only the summary is kept: no activation or gradient outlives its hook. The sink is called
    once per recorded step, with everything in it, when the next step starts, on :meth:`flush` or on
    :meth:`remove`; the summaries of a step come to the host in one transfer per device.

    On steps that are not recorded, the only hooks are one forward pre-hook and one forward hook on ``model``
    (and the optimizer's step hooks) that check a counter and return; the per-layer and per-parameter hooks exist
    only during recorded steps. The model itself is never changed: no mode switch, no parameter touched.

    A model wrapped for data parallelism (``DistributedDataParallel``, ``DataParallel``) is watched through the
    module it wraps, so that tags name its layers as they are without the wrapper (``weight/fc.weight``, not
    ``weight/module.fc.weight``).

    Args:
        model: the module to watch.
        every: record every this many steps (1 records every step).
        sink: called with the list of records of each recorded step.
        kinds: which of ``"weight"``, ``"bias"``, ``"gradient"``, ``"activation"`` to record.
        bins: bins per histogram.
        optimizer: if given, steps are this optimizer's steps and gradients are read as it applies them.
        on_step: called with each step's number as the step begins, before its first forward pass changes anything
            (``Run.watch(checkpoint_every=)`` keeps the weights there).
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 100,
        *,
        sink: Sink,
        kinds: Iterable[HistogramKind] = KINDS,
        bins: int = 64,
        optimizer: torch.optim.Optimizer | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise BadInputError(f"Watcher watches a torch.nn.Module, not a {type(model).__name__}.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise BadInputError(f"every={every!r}: pass a positive whole number of steps, e.g. every=100.")
        if not callable(sink):
            raise BadInputError(f"sink={sink!r} is not callable; pass a function that takes a list of records.")
        chosen: tuple[str, ...] = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = sorted(set(chosen) - set(KINDS))
        if unknown:
            raise BadInputError(f"unknown kind(s) {unknown}; choose from {list(KINDS)}.")
        check_bins(bins)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise BadInputError(f"optimizer= takes a torch.optim.Optimizer, not a {type(optimizer).__name__}.")
        self.every = every
        self.bins = bins
        self.kinds = frozenset(chosen)
        self._sink = sink
        model = unwrapped(model)
        self._root = type(model).__name__
        self._params = [(name, param, _owner(name), _param_kind(name)) for name, param in model.named_parameters()]
        self._leaves = [(name, module) for name, module in model.named_modules() if not any(module.children())]
        self._optimizer = optimizer
        self._on_step = on_step
        self._hooks = Hooks()  # for the watcher's lifetime
        self._step_hooks = Hooks()  # for one recorded step
        self._pending: dict[str, _Pending] = {}
        self._step = -1
        self._explicit = False
        self._recording = False
        self._forwarded = False
        self._capturing = False
        self._calls: dict[str, int] = {}
        self._removed = False
        try:
            self._hooks.add(model.register_forward_pre_hook(self._before_forward))
            self._hooks.add(model.register_forward_hook(self._after_forward, always_call=True))
            if optimizer is not None:
                self._hooks.add(optimizer.register_step_pre_hook(self._before_optimizer_step))
                self._hooks.add(optimizer.register_step_post_hook(self._after_optimizer_step))
                self._begin(0)
        except BaseException:
            self.remove()
            raise

    @property
    def current_step(self) -> int:
        """The number of the step under way (-1 before the first one)."""
        return self._step

    def step(self, n: int) -> None:
        """Say that what follows belongs to training step ``n`` (forward passes stop counting steps from now on).

        Calling it again with the same ``n`` stays in that step; a smaller ``n`` is an error.
        """
        if self._removed:
            raise BadInputError("this Watcher was removed; make a new one to watch the model again.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BadInputError(f"step({n!r}): pass the training step as a whole number >= 0.")
        if n < self._step:
            raise BadInputError(f"step({n}) after step {self._step}: steps must not go backwards.")
        self._explicit = True
        if n != self._step:
            self._begin(n)

    def flush(self) -> None:
        """Hand the records of the step under way to the sink now; nothing more is recorded for that step."""
        self._end_step()

    def remove(self) -> None:
        """Flush, then remove every hook; the watcher records nothing after this. Safe to call twice."""
        try:
            self._end_step()
        finally:
            self._removed = True
            self._step_hooks.remove()
            self._hooks.remove()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # Steps.

    def _begin(self, step: int) -> None:
        self._end_step()
        self._step = step
        if self._on_step is not None:
            self._on_step(step)
        if step % self.every:
            return
        self._recording = True
        self._forwarded = False
        try:
            self._add_step_hooks()
            for name, param, layer, kind in self._params:
                if kind in self.kinds:
                    self._keep(f"{kind}/{name}", param, layer, kind)
        except BaseException:
            self._end_step()
            raise

    def _end_step(self) -> None:
        self._recording = self._capturing = False
        self._step_hooks.remove()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._sink(self._records(pending))

    def _add_step_hooks(self) -> None:
        if "gradient" in self.kinds and self._optimizer is None:
            for name, param, layer, _ in self._params:
                if param.requires_grad:
                    self._step_hooks.add(param.register_post_accumulate_grad_hook(self._gradient_hook(name, layer)))
        if "activation" in self.kinds:
            for name, module in self._leaves:
                # Prepended, so that it sees the module's own output, and, on a model that is itself a leaf, runs
                # before the hook that ends the forward pass's capture.
                hook = module.register_forward_hook(self._activation_hook(name), prepend=True)
                self._step_hooks.add(hook)

    # Hooks: each returns at once unless the step is being recorded.

    def _before_forward(self, module: nn.Module, _args: object) -> None:
        counted = module.training and torch.is_grad_enabled()
        if not counted:
            return
        if not self._explicit and self._optimizer is None:
            self._begin(self._step + 1)
        if self._recording and not self._forwarded:
            self._forwarded = self._capturing = True
            self._calls.clear()

    def _after_forward(self, _module: nn.Module, _args: object, _output: object) -> None:
        self._capturing = False

    def _before_optimizer_step(self, _optimizer: object, _args: object, _kwargs: object) -> None:
        if not self._recording or "gradient" not in self.kinds:
            return
        for name, param, layer, _ in self._params:
            if param.grad is not None:
                self._keep(f"gradient/{name}", param.grad, layer, "gradient")

    def _after_optimizer_step(self, _optimizer: object, _args: object, _kwargs: object) -> None:
        if not self._explicit:
            self._begin(self._step + 1)

    def _gradient_hook(self, name: str, layer: str) -> Callable[[Tensor], None]:
        def hook(param: Tensor) -> None:
            if self._recording and param.grad is not None:
                self._keep(f"gradient/{name}", param.grad, layer, "gradient")

        return hook

    def _activation_hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            if not self._capturing:
                return
            tensor = _first_tensor(output)
            if tensor is None:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            label = name or self._root
            self._keep(f"activation/{label}" + (f"#{call}" if call else ""), tensor, name, "activation")

        return hook

    # Records.

    def _keep(self, tag: str, tensor: Tensor, layer: str, kind: HistogramKind) -> None:
        with torch.no_grad():
            self._pending[tag] = _Pending(summarise(tensor, self.bins), tensor.numel(), layer, kind)

    def _records(self, pending: dict[str, _Pending]) -> list[Histogram | Scalar]:
        rows: dict[str, np.ndarray] = {}
        by_device: dict[torch.device, list[str]] = {}
        for tag, item in pending.items():
            by_device.setdefault(item.row.device, []).append(tag)
        for tags in by_device.values():
            host = torch.stack([pending[tag].row for tag in tags]).cpu().numpy()
            rows.update(zip(tags, host))
        now = time.time()
        records: list[Histogram | Scalar] = []
        squares: dict[str, float] = {}
        for tag, item in pending.items():
            record = unpack(
                rows[tag],
                count=item.count,
                tag=tag,
                step=self._step,
                layer=item.layer,
                kind=item.kind,
                wall_time=now,
            )
            records.append(record)
            if item.kind == "gradient":
                # The histogram's norm leaves NaN and ±inf out; the layer's gradient norm must not hide them.
                norm = math.nan if record.nonfinite else record.norm
                squares[item.layer] = squares.get(item.layer, 0.0) + norm**2
        for layer, total in squares.items():
            records.append(Scalar(f"grad_norm/{layer or self._root}", math.sqrt(total), self._step, wall_time=now))
        return records


def unwrapped(model: nn.Module) -> nn.Module:
    """The module a data-parallel wrapper (``DistributedDataParallel``, ``DataParallel``) wraps, else ``model``: the
    same layers and parameters, named as the user's model names them. (An FSDP model is not such a wrapper: its
    parameters live in the wrapper, flattened and sharded.)"""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def _owner(parameter_name: str) -> str:
    return parameter_name.rpartition(".")[0]


def _param_kind(parameter_name: str) -> HistogramKind:
    return "bias" if "bias" in parameter_name.rpartition(".")[2].lower() else "weight"


def _first_tensor(output: object) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Sequence) and not isinstance(output, str):
        for item in output:
            if isinstance(item, Tensor):
                return item
    return None
