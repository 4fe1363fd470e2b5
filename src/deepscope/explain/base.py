"""The method registry, the base class every method extends, and ``explain()`` itself."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError, close_names
from ..explanation import Explanation
from ..targets import Target, TargetSpec, layers_of

# The shared option vocabulary: one meaning per name across every method.
VOCABULARY: dict[str, str] = {
    "baseline": 'what "absent" looks like: a number (the background value, where the data have one), "mean" '
    '(per-channel mean of the data set given as data=, else of the inputs), "blur" (a blurred copy of each input), '
    "or a tensor broadcastable to the inputs",
    "data": "the data set the inputs come from (a tensor, an (inputs, labels) pair or a DataLoader, preprocessed "
    "as the inputs are): baseline='mean' is its per-channel mean",
    "steps": "number of steps along a path (integrated gradients)",
    "batch_size": "how many model inputs are evaluated in one forward pass",
    "samples": "number of random samples (SmoothGrad noise draws, LIME perturbations)",
    "noise": "standard deviation of the Gaussian noise, as a fraction of each input's value range",
    "window": "size of the occluding patch: an int, an (h, w) pair, or a list of them to average several sizes",
    "stride": "step of the sliding window: an int or an (h, w) pair",
    "rule": "the LRP rule: 'epsilon', 'gamma', 'alpha_beta' (first layer: z-box unless first_rule says otherwise)",
    "reshape": "how to make a layer's token output (N, tokens, C) a spatial map: True (square grid, class token "
    "dropped) or a callable returning (N, C, H, W)",
    "reduce": "how channels become the heatmap: 'max_abs', 'sum_abs' or 'sum'",
    "call": "which call of a layer that runs more than once per forward pass is explained (default: the last)",
    "seed": "seed of the random generator, for reproducible samples",
    "base": "the gradient method SmoothGrad averages ('saliency', 'guided_backprop', ...)",
    "probability": "deprecated: occlusion measures the target on the softmax; pass target=ds.probability(target)",
    "incremental": "occlusion recomputes only what each patch changes: None (where the model allows), True, False",
    "segments": "LIME's interpretable features: 'grid', 'slic' (needs scikit-image), or a tensor of segment ids",
    "grid": "cells per side of LIME's grid segmentation",
    "kernel_width": "width of LIME's exponential kernel on the cosine distance of a sample to the input",
    "epsilon": "LRP epsilon stabiliser",
    "gamma": "LRP gamma: weight of positive contributions",
    "alpha": "LRP alpha (beta = alpha - 1)",
    "first_rule": "LRP rule of the first layer: 'zbox', 'flat', 'wsquare' or None (same as the rest)",
    "low": "lowest input value (z-box rule); default: the inputs' minimum",
    "high": "highest input value (z-box rule); default: the inputs' maximum",
    "biases": "LRP: whether the rules include the layers' biases (which absorb relevance); False conserves it",
    "ridge": "LIME: penalty of the weighted ridge regression (LIME's default 1.0; 0 for least squares)",
    "head": "CAM: the linear layer after global average pooling (default: the last nn.Linear)",
    "output": "where the scores are in the model's output: None (the tensor itself, a dict's or Hugging Face "
    "ModelOutput's 'logits', else the first tensor), a key, an index, or a callable output -> tensor",
}

# Options every method takes, whatever its own.
COMMON: Mapping[str, Any] = MappingProxyType({"output": None})

M = TypeVar("M", bound="type[Method]")


def defaults(**options: Any) -> Mapping[str, Any]:
    """A method's option defaults, read-only so that no call can change them for the next."""
    return MappingProxyType(options)


_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make a method available to ``ds.explain`` under ``name``."""

    def add(cls: M) -> M:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        cls.name = name
        if cls.needs_module is None:
            raise RuntimeError(f"{name}: set needs_module (True if it hooks the model's modules) on {cls.__name__}")
        unknown = set(cls.options) - set(VOCABULARY)
        if unknown:
            raise RuntimeError(f"{name}: options {sorted(unknown)} are not in the shared vocabulary")
        _REGISTRY[name] = cls
        return cls

    return add


def methods() -> list[str]:
    """The names ``ds.explain`` accepts, in registration order."""
    return list(_REGISTRY)


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        near = close_names(str(name), _REGISTRY)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise BadInputError(f"unknown method {name!r}.{hint} Known methods: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def describe(name: str) -> str:
    """A method's documentation and its options with their defaults."""
    cls = method_class(name)
    lines = [f"{name}: {(cls.__doc__ or '').strip()}", "", "options:"]
    for option, default in {**cls.options, **COMMON}.items():
        lines.append(f"  {option}={default!r}: {VOCABULARY[option]}")
    if cls.uses_layer:
        lines.append("  layer: a name from model.named_modules()")
    return "\n".join(lines)


@dataclass
class Result:
    """What a method computes; the base class turns it into an :class:`Explanation`."""

    attribution: Tensor | None = None
    heatmap: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class Method(ABC):
    """One explanation method. Subclasses set ``options`` (defaults) and implement :meth:`attribute`.

    The instance lives for one ``explain`` call: ``self.model``, ``self.inputs`` (on the model's device),
    ``self.target``, ``self.layer`` and ``self.opts`` (options with defaults filled in) are set for it.
    """

    name: ClassVar[str]
    options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    uses_layer: ClassVar[bool] = False
    # Whether the method reaches inside the model (module hooks, layers): only then must the model be an
    # nn.Module; the others accept any function of the input batch. Every registered method decides.
    needs_module: ClassVar[bool | None] = None
    needs_spatial: ClassVar[bool] = False
    default_reduce: ClassVar[str] = "sum"

    def __init__(
        self, model: nn.Module, inputs: Tensor, target: Target, layer: str | None, opts: dict[str, Any]
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.target = target
        self.layer = layer
        self.opts = opts
        self.scores: Tensor | None = None

    @abstractmethod
    def attribute(self) -> Result:
        """Compute the attribution and/or heatmap for ``self.inputs``."""

    # Shared machinery ------------------------------------------------------------------------------------

    def count(self, name: str, minimum: int = 1) -> int:
        """Integer option ``name``, checked to be at least ``minimum``."""
        value = self.opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise BadInputError(f"{self.name}: {name}={value!r} must be an integer of at least {minimum}.")
        return int(value)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The random generator for the ``seed`` option: seeded with it, or freshly seeded when it is None."""
        generator = torch.Generator(device=device)
        seed = self.opts.get("seed")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        return generator

    def forward(
        self, inputs: Tensor, hooks: probe.Hooks | None = None, of: int | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the model, capturing the layers the target reads; return (one target score per row, the output).

        With ``of=i`` every row is a variant of input ``i`` and is scored for input ``i``'s target; ``rows`` names
        each row's input.
        """
        return self.target.forward(self.model, self.run, inputs, hooks, of=of, rows=rows)

    def run(self, inputs: Tensor) -> Tensor:
        """The model's score tensor for ``inputs``, read from its output as the ``output`` option says."""
        return probe.run(self.model, inputs, self.opts.get("output"))

    def clean_scores(self) -> Tensor:
        """The target's scores on the clean inputs (binding a predicted-class target), without gradients."""
        with torch.no_grad():
            scores, _ = self.forward(self.inputs)
        self.scores = scores.detach()
        return self.scores

    def input_gradient(self, inputs: Tensor, record: bool = True) -> Tensor:
        """d(target score)/d(inputs) for each row; parameters' ``.grad`` are never touched.

        Backward rules (guided backprop, deconvnet) apply when the caller wraps this in a rewrite.
        """
        x = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            scores, _ = self.forward(x)
            (grad,) = torch.autograd.grad(scores.sum(), x)
        if record and self.scores is None:
            self.scores = scores.detach()
        return grad

    def reduce(self, attribution: Tensor) -> Tensor:
        """Channels to heatmap, by the ``reduce`` option (images and signals); feature vectors stay as they are."""
        if attribution.ndim <= 2:
            return attribution
        how = self.opts.get("reduce", self.default_reduce)
        if how == "max_abs":
            return attribution.abs().amax(dim=1)
        if how == "sum_abs":
            return attribution.abs().sum(dim=1)
        if how == "sum":
            return attribution.sum(dim=1)
        raise BadInputError(f"reduce={how!r} is not one of 'max_abs', 'sum_abs', 'sum'.")


# explain() -----------------------------------------------------------------------------------------------


# Modules that compute differently in training mode; a model in training mode without them explains the same.
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _check_inputs(model: nn.Module, inputs: object) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise BadInputError(
            f"inputs must be a torch.Tensor batch (N first), not {type(inputs).__name__}; "
            "convert with torch.as_tensor and add a batch axis for a single input."
        )
    if not inputs.is_floating_point():
        raise BadInputError(f"inputs have dtype {inputs.dtype}; pass floating-point inputs (x.float()).")
    if inputs.ndim < 2:
        raise BadInputError(
            f"inputs have shape {tuple(inputs.shape)}; a batch needs a leading N axis (x.unsqueeze(0))."
        )
    if inputs.shape[0] == 0:
        raise BadInputError("inputs are an empty batch (N = 0); pass at least one input.")
    if not torch.isfinite(inputs).all():
        raise BadInputError("inputs contain NaN or infinite values; clean them before explaining.")
    dtype = probe.model_dtype(model)
    autocast = torch.is_autocast_enabled(inputs.device.type)
    if dtype is not None and dtype != inputs.dtype and not autocast:
        raise BadInputError(
            f"inputs are {inputs.dtype} but the model's parameters are {dtype}; convert one to the other "
            f"(x.to({dtype}) or model.to({inputs.dtype}))."
        )
    device = probe.model_device(model)
    return inputs.detach().to(device)


def _check_options(cls: type[Method], options: dict[str, Any]) -> dict[str, Any]:
    known = {**cls.options, **COMMON}
    unknown = [k for k in options if k not in known]
    if unknown:
        raise BadInputError(f"{cls.name} has no option {unknown[0]!r}; its options are: {', '.join(known)}.")
    return {**known, **options}


def _to_input_resolution(heatmap: Tensor, inputs: Tensor) -> Tensor:
    spatial = tuple(inputs.shape[2:])
    if inputs.ndim <= 2 or (heatmap.ndim == inputs.ndim - 1 and tuple(heatmap.shape[1:]) == spatial):
        return heatmap
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    resized = torch.nn.functional.interpolate(heatmap[:, None].float(), size=spatial, mode=mode, align_corners=False)
    return resized[:, 0]


def _function_model(cls: type[Method], function: Callable[[Tensor], Any], layer: object, target: object) -> nn.Module:
    """A function given as the model, wrapped for a method that only runs it; refused where modules are needed."""
    accepting = ", ".join(name for name, c in _REGISTRY.items() if not c.needs_module)
    if cls.needs_module:
        raise BadInputError(
            f"{cls.name} hooks the model's modules, so it needs a torch.nn.Module, not a "
            f"{type(function).__name__}; pass the module itself, or use a method that accepts a function: "
            f"{accepting}."
        )
    if layer is not None or layers_of(target):  # type: ignore[arg-type]
        raise BadInputError(
            f"a {type(function).__name__} given as the model has no layers to read; layer= and Unit targets need "
            "a torch.nn.Module (pass the module itself), as do targets that read a layer (channel, neuron, ...)."
        )
    return probe.FunctionModel(function)


def explain(
    model: nn.Module | Callable[[Tensor], Any],
    inputs: Tensor,
    method: str = "saliency",
    target: TargetSpec = None,
    layer: str | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``model``'s outputs on a batch of ``inputs`` with one attribution method.

    Args:
        model: any ``nn.Module`` that takes one tensor, or a Keras 3 model on the torch backend (its layers named
            as in Keras), or, for methods that do not hook the model's modules (``needs_module`` False: gradients,
            integrated gradients, SmoothGrad, occlusion, LIME, ...), any function of the input batch. It is left
            as it was found: hooks removed, modes and ``requires_grad`` flags restored, even when an error is
            raised.
        inputs: a batch ``[N, C, H, W]`` (images), ``[N, C, L]`` (signals) or ``[N, F]`` (feature vectors); for
            a Keras model, in its own layout (``[N, H, W, C]`` when channels last). Results are channels first.
        method: one of :func:`methods`; :func:`describe` documents each method's options.
        target: ``None`` (the predicted class), an int, one int per input, a callable from the output to one
            scalar per input, a :class:`deepscope.Unit`, :func:`deepscope.probability` of a class, or any objective
            of :mod:`deepscope.targets` (``channel``, ``neuron``, ``logit``, ...) and sums of them.
        layer: for layer methods (the CAM family), a name from ``model.named_modules()`` (a Keras layer's name
            for a Keras model); the default is the last convolutional feature map.
        **options: the method's options (shared vocabulary: ``baseline``, ``steps``, ``batch_size``,
            ``samples``, ``noise``, ``window``, ``stride``, ``rule``, ``reshape``, ...).

    Returns:
        An :class:`Explanation` with ``heatmap`` ``[N, H, W]`` on the CPU for every method and ``attribution``
        ``[N, C, H, W]`` where the method has one.
    """
    cls = method_class(method)
    if probe.is_function_model(model):
        model = _function_model(cls, model, layer, target)
    given = probe.from_model_layout(model, inputs)  # a Keras model's inputs come in its own layout
    model = probe.torch_model(model)
    x = _check_inputs(model, given)
    opts = _check_options(cls, options)
    if layer is not None and not cls.uses_layer:
        raise BadInputError(f"{method} does not use a layer; drop layer={layer!r} (layer methods: CAM family).")
    if cls.needs_spatial and x.ndim < 3:
        raise BadInputError(f"{method} needs inputs with spatial axes (N, C, H, W); got {tuple(x.shape)}.")
    if layer is not None:
        probe.named_layer(model, layer)
    resolved = Target(target, x.shape[0])
    for name in resolved.layers:
        probe.named_layer(model, name)
    if any(m.training and isinstance(m, _MODE_DEPENDENT) for m in model.modules()):
        warnings.warn(
            f"{type(model).__name__} is in training mode: dropout and batch statistics make explanations "
            "random and batch-dependent. Call model.eval() first (deepscope does not change the mode for you).",
            stacklevel=2,
        )
    with probe.preserved(model):
        if cls.uses_layer and layer is None:
            layer = probe.default_cam_layer(model, x)
        instance = cls(model, x, resolved, layer, opts)
        result = instance.attribute()
        if instance.scores is None:
            instance.clean_scores()
    assert instance.scores is not None
    attribution = None if result.attribution is None else result.attribution.detach().float().cpu()
    heatmap = result.heatmap if result.heatmap is not None else instance.reduce(result.attribution)  # type: ignore[arg-type]
    heatmap = _to_input_resolution(heatmap.detach().float(), x).cpu()
    return Explanation(
        method=method,
        heatmap=heatmap,
        attribution=attribution,
        targets=resolved.classes.clone() if resolved.classes is not None else None,
        scores=instance.scores.detach().float().cpu(),
        inputs=x.detach().float().cpu(),
        layer=layer,
        options=opts,
        labels=resolved.describe(),
        extras={name: value.detach().float().cpu() for name, value in result.extras.items()},
    )
