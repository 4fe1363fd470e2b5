"""Probes: the same few inputs explained at every N-th training step, stored as explanation sets tagged by step.

``run.watch(model, probes=images, labels=labels, methods=["gradcam", "saliency"])`` (or ``probes=Probes(...)`` for
more choices) explains the probe images as each N-th step begins, before its forward pass, with the weights that
step starts from: the weights ``run.watch(checkpoint_every=N)`` keeps for the same step. Each step's record is an
:class:`~deepscope.store.records.ExplanationSet` (the board's Explanations view): every probe's picture, each
method's heatmap and overlay, its true class, the model's class at that step, and the score of what each method
explained.

Probing leaves training as it found it (:func:`untouched`): the model runs in eval mode (batch norm reads its
running statistics and does not update them; dropout is off) and every module's mode, every parameter's
``requires_grad`` and ``.grad`` come back as they were, as do torch's random generators (CPU and the model's CUDA
devices) and autocast, which is off while probing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError
from ..targets import TargetSpec

if TYPE_CHECKING:
    from ..explanation import Explanation
    from ..store.records import ExplanationSet


class Probes:
    """Probe inputs and how to explain them during training (:meth:`deepscope.Run.watch`'s ``probes=``).

    Args:
        images: the probe inputs, a batch ``[N, C, H, W]`` of 1 or 3 channels as the model takes them (e.g. 16
            images of the validation set). They are moved to the model's device once.
        labels: their true classes (``N`` indices or names), so that the board can mark what the model gets wrong
            at each step.
        methods: the explanation methods (names of :func:`deepscope.methods`), each stored as a row of the set.
        every: explain the probes at every this many training steps (steps as :class:`~deepscope.track.watch.
            Watcher` counts them; step 0, the untrained model, included).
        classes: class names, to show indices by name.
        target: what each method explains (``ds.explain``'s ``target``); default the class predicted at that step.
        layer: the layer of the methods that need one (the CAM family); default the one ``ds.explain`` chooses at
            the first probe, kept for the rest of training.
        options: per method, its options: ``{"smoothgrad": {"samples": 8}}``.
        tag: the tag of the records.
        cmap, alpha: how heatmaps are coloured and laid over the probes (:func:`deepscope.render.overlay`).

    Raises:
        BadInputError: probes that are not a batch of images, labels not one per probe, an unknown method (the
            message lists close names), options for a method not chosen, or ``every`` not a positive whole number.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Any = None,
        methods: Sequence[str] | str = ("gradcam",),
        every: int = 100,
        *,
        classes: Sequence[str] | None = None,
        target: TargetSpec = None,
        layer: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        tag: str = "probes",
        cmap: str | None = None,
        alpha: float = 0.5,
    ) -> None:
        from ..explain.base import method_class

        if not isinstance(images, Tensor):
            raise BadInputError(f"probes are a tensor of images [N, C, H, W], not a {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
            raise BadInputError(
                f"probes are a batch of images [N, 1 or 3, H, W] with N >= 1 (the explanations view shows images); "
                f"these are {list(images.shape)}. One image [C, H, W] is images[None]."
            )
        if not images.is_floating_point():
            raise BadInputError(f"probes are float images as the model takes them, not {images.dtype}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise BadInputError(f"every={every!r}: pass a positive whole number of steps, e.g. every=100.")
        chosen = [methods] if isinstance(methods, str) else list(methods)
        if not chosen or len(set(chosen)) != len(chosen):
            raise BadInputError(f"methods={methods!r}: name one or more methods, each once, e.g. ['gradcam'].")
        classes_of = {name: method_class(name) for name in chosen}  # an unknown name lists close ones
        options = dict(options or {})
        extra = sorted(set(options) - set(chosen))
        if extra:
            raise BadInputError(f"options for {extra}, which are not among the methods {chosen}; key options by method")
        n = images.shape[0]
        if labels is not None:
            try:
                count: int | None = len(labels)
            except TypeError:
                count = None
            if count != n:
                raise BadInputError(f"labels: give one per probe ({n}), not {count if count is not None else labels!r}")
        self.images = images.detach()
        self.labels = labels
        self.methods = chosen
        self.every = every
        self.classes = None if classes is None else [str(c) for c in classes]
        self.target = target
        self.layer = layer
        self.options = {name: dict(opts) for name, opts in options.items()}
        self.tag = tag
        self.cmap = cmap
        self.alpha = alpha
        # The methods that take layer=: those that need a layer (CAM); a gradient method's layer is optional and
        # would change what it explains (a layer attribution), so it gets none.
        self._layered = {name for name, cls in classes_of.items() if cls.uses_layer and not cls.layer_optional}
        self._chosen_layer: str | None = layer
        self._on: dict[torch.device, Tensor] = {}

    def due(self, step: int) -> bool:
        """Whether the probes are explained at ``step``."""
        return step % self.every == 0

    def check(self, model: nn.Module) -> None:
        """Refuse, before training starts, probes the model cannot take or a layer it does not have: one forward
        pass in eval mode, leaving the model and training as they were (:func:`untouched`)."""
        if self.layer is not None:
            probe.named_layer(model, self.layer)
        x = self._inputs(model)
        with untouched(model), torch.no_grad():
            try:
                probe.run(model, x[:1])
            except BadInputError as error:
                raise BadInputError(f"the probes cannot go through the model: {error}") from None

    def explain(self, model: nn.Module) -> tuple[list[Explanation], Tensor | None]:
        """Each method's explanation of the probes and the model's scores ``[N, K]`` (``None`` unless the model
        gives one row of scores per probe), computed in eval mode on the model's device, leaving the model and
        training as they were (:func:`untouched`)."""
        from ..explain import explain

        x = self._inputs(model)
        found: list[Explanation] = []
        with untouched(model):
            with torch.no_grad():
                scores = probe.run(model, x)
            for name in self.methods:
                layer = self._chosen_layer if name in self._layered else None
                e = explain(model, x, name, self.target, layer, **self.options.get(name, {}))
                if name in self._layered and self._chosen_layer is None:
                    self._chosen_layer = e.layer
                found.append(e)
        return found, scores.detach().float().cpu() if scores.ndim == 2 and len(scores) == len(x) else None

    def record(self, model: nn.Module, step: int) -> ExplanationSet:
        """The explanation set of the probes with ``model`` as it is now, tagged ``step``."""
        from ..store.records.explanation import explanation_set

        explanations, scores = self.explain(model)
        return explanation_set(
            explanations, self.labels, scores, self.classes, self.tag, step, cmap=self.cmap, alpha=self.alpha
        )

    def _inputs(self, model: nn.Module) -> Tensor:
        device = probe.model_device(model)
        moved = self._on.get(device)
        if moved is None:
            dtype = probe.model_dtype(model) or self.images.dtype
            moved = self._on[device] = self.images.to(device=device, dtype=dtype)
        return moved

    def __repr__(self) -> str:
        return f"Probes({len(self.images)} images, methods={self.methods}, every={self.every}, tag={self.tag!r})"


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run what the block does on ``model`` in eval mode, and give training back everything it could change.

    On exit, whether or not an error was raised: every module's train/eval mode and every parameter's
    ``requires_grad`` (:func:`deepscope.probe.preserved`); every parameter's ``.grad``, the very tensor it held
    (the block starts with none, so that nothing it does can add to the training step's gradients); torch's
    random generators on the CPU and on the model's CUDA devices (``torch.random.fork_rng``). Gradients are
    enabled and autocast is off inside, whatever the training loop had.
    """
    params = list(model.parameters())
    grads = [p.grad for p in params]
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    device_type = probe.model_device(model).type
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            stack.enter_context(probe.preserved(model))
            stack.enter_context(torch.enable_grad())
            if device_type in ("cuda", "cpu"):
                stack.enter_context(torch.autocast(device_type, enabled=False))
            for p in params:
                p.grad = None
            model.eval()
            yield
    finally:
        for p, grad in zip(params, grads):
            p.grad = grad


def probes_from(probes: Tensor | Probes, labels: Any, methods: Sequence[str] | str | None, every: int) -> Probes:
    """``run.watch``'s ``probes=`` as a :class:`Probes`: a tensor with ``labels`` and ``methods`` (default
    Grad-CAM) explained every ``every`` steps, or a :class:`Probes` as it is (then ``labels`` and ``methods`` must
    not be given: they are the Probes' own)."""
    if isinstance(probes, Probes):
        if labels is not None or methods is not None:
            raise BadInputError("probes=Probes(...) holds its own labels and methods; pass them to Probes")
        return probes
    if not isinstance(probes, Tensor):
        raise BadInputError(f"probes= takes a tensor of images [N, C, H, W] or a Probes, not {type(probes).__name__}")
    return Probes(probes, labels, ("gradcam",) if methods is None else methods, every)
