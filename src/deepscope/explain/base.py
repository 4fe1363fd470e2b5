"""The method registry, the base class every method extends, and ``explain()`` itself."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, overload

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError, close_names
from ..explanation import Explanation, MultiInputExplanation
from ..targets import Rows, Target, TargetSpec, layers_of, row_inputs
from .inputs import Layout, check_batch_sizes, check_tuple

# The shared option vocabulary: one meaning per name across every method.
VOCABULARY: dict[str, str] = {
    "baseline": 'what "absent" looks like: a number (the background value, where the data have one), "mean" '
    '(per-channel mean of the data set given as data=, else of the inputs), "blur" (a blurred copy of each input), '
    "or a tensor broadcastable to the inputs",
    "data": "the data set the inputs come from (a tensor, an (inputs, labels) pair or a DataLoader, preprocessed "
    "as the inputs are): baseline='mean' is its per-channel mean",
    "steps": "number of steps along a path (integrated gradients): nodes of the quadrature rule",
    "integration": "the quadrature rule of a path integral (Captum's method=): 'gauss_legendre' (exact for "
    "polynomials of degree 2 steps - 1), 'riemann_trapezoid', 'riemann_left', 'riemann_right', 'riemann_middle'",
    "completeness": "integrated gradients' tolerance on the completeness error |sum(attribution) - (f(x) - "
    "f(baseline))| / |f(x) - f(baseline)| of each input: steps double from steps until every input is within it "
    "(at most max_steps); None keeps steps. The error reached is reported as extras['completeness_error']",
    "max_steps": "the most steps completeness= may use; a warning says when the tolerance is not reached in them",
    "multiply_by_inputs": "whether the attribution is multiplied by (input - baseline) (Captum's multiply_by_inputs): "
    "True gives global attributions that sum to the score's change, False the local ones (the mean gradient, "
    "DeepLift's multipliers)",
    "batch_size": "how many model inputs are evaluated in one forward pass",
    "precision": "the number type of a perturbation method's many forward passes: 'float32' (the model's own, "
    "exact; the default) or 'bfloat16' (under torch.autocast: several times faster on hardware with bfloat16 units, "
    "at the error docs/explain.md measures)",
    "samples": "number of random samples (SmoothGrad noise draws, LIME perturbations)",
    "noise": "standard deviation of the Gaussian noise, as a fraction of each input's value range",
    "window": "size of the occluding patch: an int, an (h, w) pair, or a list of them to average several sizes",
    "stride": "step of the sliding window: an int or an (h, w) pair",
    "rule": "the LRP rule: 'epsilon', 'gamma', 'alpha_beta' (first layer: z-box unless first_rule says otherwise)",
    "reshape": "how a layer's output becomes a map (N, C, H, W): None infers it (tokens (N, tokens, C) on a grid of "
    "the inputs' aspect after class, distillation or register tokens; channels-last maps permuted), True reads it "
    "as tokens or channels last, False as channels first, or a callable returning (N, C, H, W)",
    "reduce": "how channels become the heatmap: 'max_abs', 'sum_abs' or 'sum'",
    "call": "which call of a layer that runs more than once per forward pass is explained (default: the last)",
    "seed": "seed of the random generator, for reproducible samples",
    "base": "the gradient method SmoothGrad averages ('saliency', 'guided_backprop', ...)",
    "nt_type": "how SmoothGrad combines the base's attributions over the noisy samples (Captum's NoiseTunnel "
    "nt_type): 'smoothgrad' (the mean), 'smoothgrad_sq' (the mean of the squares), 'vargrad' (the variance)",
    "probability": "deprecated: occlusion measures the target on the softmax; pass target=ds.probability(target)",
    "incremental": "occlusion recomputes only what each patch changes: None (where the model allows), True, False",
    "tau": "occlusion's projective field threshold (Krypton): the share of each map's side a patch's recomputed "
    "cone may grow to; 1 is exact, below 1 an approximation that runs faster",
    "segments": "the interpretable features of LIME, the Shapley methods and feature ablation: 'grid', 'slic' (needs "
    "scikit-image), or a tensor of segment ids (Captum's feature_mask)",
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
    "forward_args": "extra positional arguments of the model, after the inputs: model(*inputs, *forward_args, "
    "**forward_kwargs); a tensor whose first axis has the batch's size N is per input, and is repeated with the "
    "inputs where a method evaluates several copies of them (Captum's additional_forward_args)",
    "forward_kwargs": "extra keyword arguments of the model (an attention mask, say), repeated with the inputs as "
    "forward_args are",
    "aug_smooth": "CAM family: average the maps of the inputs flipped left-right or not and times 0.9, 1, 1.1 "
    "(pytorch-grad-cam's test-time augmentation), each scaled to [0, 1]",
    "eigen_smooth": "CAM family: the first principal component of the weighted activations instead of their sum "
    "over channels (pytorch-grad-cam's eigen_smooth; sign chosen to agree with the sum)",
    "head_fusion": "attention rollout: how each layer's attention heads become one attention: 'mean', 'max', 'min'",
}

# Options every method takes, whatever its own.
COMMON: Mapping[str, Any] = MappingProxyType({"output": None, "forward_args": (), "forward_kwargs": None})

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
    if cls.layer_optional:
        lines.append("  layer: a name from model.named_modules(); attributes to that layer's output (optional)")
    elif cls.uses_layer:
        lines.append("  layer: a name from model.named_modules()")
    return "\n".join(lines)


@dataclass
class Result:
    """What a method computes; the base class turns it into an :class:`Explanation`."""

    attribution: Tensor | None = None
    # For several inputs: one map per input (None for a feature vector), or one layer method's map (it goes to the
    # first input with spatial axes), or None (the attribution reduced per input).
    heatmap: Tensor | tuple[Tensor | None, ...] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class Method(ABC):
    """One explanation method. Subclasses set ``options`` (defaults) and implement :meth:`attribute`.

    The instance lives for one ``explain`` call: ``self.model``, ``self.inputs`` (on the model's device),
    ``self.target``, ``self.layer`` and ``self.opts`` (options with defaults filled in) are set for it.
    ``self.layout`` says where each model input sits in ``self.inputs`` (:mod:`.inputs`): several inputs are
    packed into one ``[N, F]`` batch, which :meth:`run` unpacks for the model.
    """

    name: ClassVar[str]
    options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    uses_layer: ClassVar[bool] = False
    # With uses_layer: whether the layer may be left out. Such a method explains the inputs without a layer and the
    # layer's output with one (layer attribution), so explain() picks no default layer for it.
    layer_optional: ClassVar[bool] = False
    # Whether the method reaches inside the model (module hooks, layers): only then must the model be an
    # nn.Module; the others accept any function of the input batch. Every registered method decides.
    needs_module: ClassVar[bool | None] = None
    needs_spatial: ClassVar[bool] = False
    default_reduce: ClassVar[str] = "sum"
    # Why the method explains a single input tensor only (None: it takes a tuple of inputs too).
    single_input_only: ClassVar[str | None] = None
    # What the model must compute for the method to apply ("attention": attention rollout), None for any model: the
    # registry-wide tests and ds.compare's default list give such a method only models that have it.
    requires: ClassVar[str | None] = None
    # What an all-zero heatmap most likely means for this method (said by warn_if_blank).
    blank_causes: ClassVar[str] = (
        "a dead or zero head (torchvision's ViT starts with a zero head) or a saturated model whose score does not "
        "change with the input"
    )

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Target,
        layer: str | None,
        opts: dict[str, Any],
        layout: Layout | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.target = target
        self.layer = layer
        self.opts = opts
        self.layout = layout or Layout.of(inputs)
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

    def forward(self, inputs: Tensor, hooks: probe.Hooks | None = None, of: Rows = None) -> tuple[Tensor, Tensor]:
        """Run the model, capturing the layers the target reads; return (one target score per row, the output).

        ``of`` says which input each row stands for (:data:`deepscope.targets.Rows`): by default the batch repeats
        the inputs; with ``of=i`` every row is a variant of input ``i`` and is scored for input ``i``'s target; a
        tensor names each row's input.
        """
        return self.target.forward(self.model, lambda batch: self.run(batch, of), inputs, hooks, of=of)

    def run(self, inputs: Tensor, of: Rows = None) -> Tensor:
        """The model's score tensor for ``inputs``, read from its output as the ``output`` option says.

        The extra forward arguments follow the rows (``of`` as in :meth:`forward`): the one place every forward
        pass of every method gets them.
        """
        args, kwargs = self.forward_arguments(row_inputs(inputs.shape[0], self.target.count, of))
        return probe.run(self.model, self.layout.unpack(inputs), self.opts.get("output"), args, kwargs)

    def forward_arguments(self, rows: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``forward_args`` and ``forward_kwargs`` for a batch whose row ``r`` stands for input ``rows[r]``."""
        n = self.target.count
        args = tuple(probe.batch_rows(value, rows, n) for value in self.opts.get("forward_args") or ())
        kwargs = {
            key: probe.batch_rows(value, rows, n) for key, value in (self.opts.get("forward_kwargs") or {}).items()
        }
        return args, kwargs

    def common_options(self) -> dict[str, Any]:
        """The options every method shares (:data:`COMMON`), for a method that runs another one on its behalf."""
        return {name: self.opts[name] for name in COMMON}

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

    @property
    def image(self) -> Tensor:
        """The input a layer method's map belongs to: the inputs, or among several the first with spatial axes."""
        return self.layout.parts(self.inputs)[self.layout.first_spatial or 0]

    def heatmaps(self, attribution: Tensor) -> list[Tensor | None]:
        """One map per input, by the ``reduce`` option; among several inputs, None for a feature vector."""
        if not self.layout.packed:
            return [self.reduce(attribution)]
        parts = self.layout.parts(attribution)
        return [self.reduce(part) if self.layout.spatial(j) else None for j, part in enumerate(parts)]

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


def _check_inputs(
    model: nn.Module, inputs: object, cls: type[Method], layer: str | None = None, name: str = "inputs"
) -> Tensor:
    """One input batch checked and moved to the model's device; ``name`` says which input, among several.

    Integers (token ids) pass only for a method that attributes to the given ``layer``."""
    several = name != "inputs"
    have, are, contain = ("has", "is", "contains") if several else ("have", "are", "contain")
    if not isinstance(inputs, Tensor):
        raise BadInputError(
            f"{name} must be a torch.Tensor batch (N first), not {type(inputs).__name__}; "
            + ("" if several else "or a tuple of them for a model with several inputs; ")
            + "convert with torch.as_tensor and add a batch axis for a single input."
        )
    ids = is_integer(inputs)
    if not inputs.is_floating_point() and not (ids and cls.layer_optional and layer is not None):
        raise BadInputError(_not_floating(model, inputs, cls, f"{name} {have}"))
    if inputs.ndim < 2:
        raise BadInputError(
            f"{name} {have} shape {tuple(inputs.shape)}; a batch needs a leading N axis (x.unsqueeze(0))."
        )
    if inputs.shape[0] == 0:
        raise BadInputError(f"{name} {are} an empty batch (N = 0); pass at least one input.")
    if not torch.isfinite(inputs).all():
        raise BadInputError(f"{name} {contain} NaN or infinite values; clean them before explaining.")
    dtype = probe.model_dtype(model)
    autocast = torch.is_autocast_enabled(inputs.device.type)
    if dtype is not None and dtype != inputs.dtype and not autocast and not ids:
        raise BadInputError(
            f"{name} {are} {inputs.dtype} but the model's parameters are {dtype}; convert one to the other "
            f"(x.to({dtype}) or model.to({inputs.dtype}))."
        )
    device = probe.model_device(model)
    return inputs.detach().to(device)


def is_integer(inputs: Tensor) -> bool:
    """Whether ``inputs`` hold integers (token ids, say): they enter a model through a lookup, not arithmetic."""
    return not (inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool)


def _not_floating(model: nn.Module, inputs: Tensor, cls: type[Method], subject: str = "inputs have") -> str:
    """Why inputs that are not floating-point cannot be explained as given, and what to pass instead."""
    said = f"{subject} dtype {inputs.dtype}, and {cls.name} needs floating-point inputs"
    if not is_integer(inputs):
        return f"{said}; pass x.float()."
    layered = ", ".join(name for name, c in _REGISTRY.items() if c.layer_optional)
    # Modules named like embeddings (HF's "bert.embeddings") first, then the lookup tables themselves.
    named = [name for name, _ in model.named_modules() if "embed" in name.rsplit(".", 1)[-1].lower()]
    lookups = [name for name, m in model.named_modules() if name and isinstance(m, nn.Embedding)]
    near = list(dict.fromkeys(close_names("embeddings", named) + lookups))[:4]
    hint = f" (here perhaps {', '.join(repr(n) for n in near)})" if near else ""
    how = "" if cls.layer_optional else f"use one of {layered} and "
    return (
        f"{said}: gradients cannot flow into integers (token ids, say). For token ids, {how}pass "
        f"layer=<the embedding layer's name>{hint}: the attribution is then to that layer's output, one value per "
        "token. For numbers that are not ids, pass x.float()."
    )


def _check_several(cls: type[Method], model: nn.Module, inputs: tuple[object, ...]) -> list[Tensor]:
    """Several inputs, each checked (errors name it), sharing the batch size and one dtype."""
    if cls.single_input_only:
        accepting = ", ".join(name for name, c in _REGISTRY.items() if not c.single_input_only)
        raise BadInputError(
            f"{cls.name} explains one input tensor, not a tuple of {len(inputs)}: {cls.single_input_only}. "
            f"Methods that take several inputs: {accepting}."
        )
    parts = [_check_inputs(model, x, cls, name=f"inputs[{j}]") for j, x in enumerate(inputs)]
    check_batch_sizes(parts)
    dtypes = {x.dtype for x in parts}
    if len(dtypes) > 1:
        raise BadInputError(
            f"the inputs have different dtypes ({', '.join(str(x.dtype) for x in parts)}); give them one dtype."
        )
    return parts


def _check_options(cls: type[Method], options: dict[str, Any]) -> dict[str, Any]:
    known = {**cls.options, **COMMON}
    unknown = [k for k in options if k not in known]
    if unknown:
        raise BadInputError(f"{cls.name} has no option {unknown[0]!r}; its options are: {', '.join(known)}.")
    opts = {**known, **options}
    args, kwargs = opts["forward_args"], opts["forward_kwargs"]
    if args is None:
        opts["forward_args"] = ()
    elif not isinstance(args, (tuple, list)):
        raise BadInputError(
            f"forward_args must be a tuple of the model's extra positional arguments, not a {type(args).__name__}; "
            f"for one argument write forward_args=(value,)."
        )
    else:
        opts["forward_args"] = tuple(args)
    if kwargs is not None and not (isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs)):
        raise BadInputError(
            f"forward_kwargs must be a dict of the model's extra keyword arguments (names to values), not "
            f"{type(kwargs).__name__}."
        )
    opts["forward_kwargs"] = dict(kwargs or {})
    return opts


def _to_input_resolution(heatmap: Tensor, inputs: Tensor) -> Tensor:
    spatial = tuple(inputs.shape[2:])
    if inputs.ndim <= 2 or (heatmap.ndim == inputs.ndim - 1 and tuple(heatmap.shape[1:]) == spatial):
        return heatmap
    if heatmap.ndim != inputs.ndim - 1:  # a map at a layer with other axes than the inputs (tokens of images)
        return heatmap
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    resized = torch.nn.functional.interpolate(heatmap[:, None].float(), size=spatial, mode=mode, align_corners=False)
    return resized[:, 0]


def warn_if_blank(method: type[Method], heatmap: Tensor, stacklevel: int = 3) -> None:
    """Warn when ``heatmap`` (one per input, first axis) is all zeros or not finite for some inputs: such a map
    looks like an explanation but says nothing, so the warning names the method's likely causes."""
    flat = heatmap.reshape(len(heatmap), -1)
    broken = int((~torch.isfinite(flat)).any(dim=1).sum())
    blank = int((flat == 0).all(dim=1).sum())
    n = len(heatmap)
    if broken:
        warnings.warn(
            f"{method.name}: the heatmap has NaN or infinite values for {broken} of {n} input(s); likely an overflow "
            "(float16 or bfloat16: explain in float32) or NaN in the model's output or the inputs' preprocessing.",
            stacklevel=stacklevel,
        )
    if blank:
        warnings.warn(
            f"{method.name}: the heatmap is all zeros for {blank} of {n} input(s); likely {method.blank_causes}.",
            stacklevel=stacklevel,
        )


def _function_model(cls: type[Method], function: Callable[..., Any], layer: object, target: object) -> nn.Module:
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


@overload
def explain(
    model: nn.Module | Callable[..., Any],
    inputs: Tensor,
    method: str = "saliency",
    target: TargetSpec = None,
    layer: str | None = None,
    **options: Any,
) -> Explanation: ...


@overload
def explain(
    model: nn.Module | Callable[..., Any],
    inputs: tuple[Tensor, ...],
    method: str = "saliency",
    target: TargetSpec = None,
    layer: str | None = None,
    **options: Any,
) -> MultiInputExplanation: ...


def explain(
    model: nn.Module | Callable[..., Any],
    inputs: Tensor | tuple[Tensor, ...],
    method: str = "saliency",
    target: TargetSpec = None,
    layer: str | None = None,
    **options: Any,
) -> Explanation | MultiInputExplanation:
    """Explain ``model``'s outputs on a batch of ``inputs`` with one attribution method.

    Args:
        model: any ``nn.Module`` that takes one tensor, or a Keras 3 model on the torch backend (its layers named
            as in Keras), or, for methods that do not hook the model's modules (``needs_module`` False: gradients,
            integrated gradients, SmoothGrad, occlusion, LIME, ...), any function of the input batch. It is left
            as it was found: hooks removed, modes and ``requires_grad`` flags restored, even when an error is
            raised.
        inputs: a batch ``[N, C, H, W]`` (images), ``[N, C, L]`` (signals) or ``[N, F]`` (feature vectors); for
            a Keras model, in its own layout (``[N, H, W, C]`` when channels last). Results are channels first.
            For a model with several inputs, a tuple of such batches sharing N (``model(*inputs)``): the result
            is a :class:`MultiInputExplanation`, whose attribution and heatmap are tuples, one per input.
            Integer inputs (token ids ``[N, T]``) need a gradient method with ``layer=``.
        method: one of :func:`methods`; :func:`describe` documents each method's options.
        target: ``None`` (the predicted class), an int, one int per input, a callable from the output to one
            scalar per input, a :class:`deepscope.Unit`, :func:`deepscope.probability` of a class, or any objective
            of :mod:`deepscope.targets` (``channel``, ``neuron``, ``logit``, ...) and sums of them.
        layer: a name from ``model.named_modules()`` (a Keras layer's name for a Keras model). The CAM family
            explains that layer's feature maps (default: the last feature map (convolutional, channels-last or
            tokens) from which the gradient reaches the output: ``layer4`` of a ResNet, the last block's first norm
            of a ViT); the gradient methods (saliency, input x gradient, integrated gradients, SmoothGrad, guided
            backprop, deconvnet) attribute to that layer's output instead of the inputs (layer attribution, as
            Captum's ``Layer*`` classes), which is how token ids are explained: ``layer=`` the embedding layer.
        **options: the method's options (shared vocabulary: ``baseline``, ``steps``, ``batch_size``,
            ``samples``, ``noise``, ``window``, ``stride``, ``rule``, ``reshape``, ...), and for every method
            ``forward_args`` / ``forward_kwargs``, the model's extra arguments (``model(*inputs, *forward_args,
            **forward_kwargs)``).

    Returns:
        An :class:`Explanation` with ``heatmap`` ``[N, H, W]`` on the CPU for every method and ``attribution``
        ``[N, C, H, W]`` where the method has one. With a gradient method at a layer, ``attribution`` has the
        layer output's shape (``[N, T, D]`` for an embedding) and ``heatmap`` reduces its features: per token
        ``[N, T]`` for token outputs, per position at the input's resolution for feature maps ``[N, C, h, w]``.
    """
    cls = method_class(method)
    if probe.is_function_model(model):
        model = _function_model(cls, model, layer, target)
    several = check_tuple(inputs)
    if several is None:
        given = probe.from_model_layout(model, inputs)  # a Keras model's inputs come in its own layout
        model = probe.torch_model(model)
        x = _check_inputs(model, given, cls, layer)
        layout = Layout.of(x)
    else:
        given_each = tuple(probe.from_model_layout(model, part) for part in several)
        model = probe.torch_model(model)
        parts = _check_several(cls, model, given_each)
        layout = Layout.of(parts)
        x = layout.pack(parts)
    opts = _check_options(cls, options)
    if layer is not None and not cls.uses_layer:
        layered = ", ".join(name for name, c in _REGISTRY.items() if c.uses_layer)
        raise BadInputError(f"{method} does not use a layer; drop layer={layer!r} (methods with a layer: {layered}).")
    if layer is not None and cls.layer_optional and layout.packed:
        raise BadInputError(
            f"{method} with layer={layer!r} attributes to that layer's output, which one input tensor feeds; with "
            "several inputs, pass the others as forward_args/forward_kwargs, or drop layer= to attribute to them."
        )
    if cls.needs_spatial and not layout.packed and x.ndim < 3:
        raise BadInputError(f"{method} needs inputs with spatial axes (N, C, H, W); got {tuple(x.shape)}.")
    if cls.uses_layer and not cls.layer_optional and layout.packed and layout.first_spatial is None:
        # Among several inputs only a layer method needs one with spatial axes: its map goes there.
        shapes = ", ".join(str(tuple(x.shape[:1]) + shape) for shape in layout.shapes)
        raise BadInputError(f"{method} needs an input with spatial axes (N, C, H, W) for its map; got {shapes}.")
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
        instance = cls(model, x, resolved, layer, opts, layout)
        if cls.uses_layer and layer is None and not cls.layer_optional:
            args, kwargs = instance.forward_arguments(torch.zeros(1, dtype=torch.long))  # the first input's
            first = layout.unpack(x[:1])
            layer = instance.layer = probe.default_cam_layer(model, first, opts.get("output"), args, kwargs)
        result = instance.attribute()
        if instance.scores is None:
            instance.clean_scores()
    assert instance.scores is not None
    if layout.packed:
        return _several(instance, result, method, opts)
    attribution = None if result.attribution is None else result.attribution.detach().float().cpu()
    assert not isinstance(result.heatmap, tuple)
    heatmap = result.heatmap if result.heatmap is not None else instance.reduce(result.attribution)  # type: ignore[arg-type]
    heatmap = _to_input_resolution(heatmap.detach().float(), x).cpu()
    warn_if_blank(cls, heatmap)
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


def _several(instance: Method, result: Result, method: str, opts: dict[str, Any]) -> MultiInputExplanation:
    """The explanation of several inputs: the packed attribution and the maps, one per input."""
    layout, target = instance.layout, instance.target
    inputs = layout.parts(instance.inputs)
    if isinstance(result.heatmap, tuple):
        maps = list(result.heatmap)
    elif result.heatmap is not None:  # a layer method's one map belongs to the first input with spatial axes
        maps = [None] * len(layout)
        maps[layout.first_spatial or 0] = result.heatmap
    else:
        assert result.attribution is not None
        maps = instance.heatmaps(result.attribution)
    heatmaps = tuple(
        None if m is None else _to_input_resolution(m.detach().float(), x).cpu() for m, x in zip(maps, inputs)
    )
    shown = [m for m in heatmaps if m is not None]
    if shown:  # blank only when every input's map is: one input the score ignores is an answer, not a failure
        warn_if_blank(type(instance), torch.cat([m.reshape(len(m), -1) for m in shown], dim=1), stacklevel=4)
    attribution = None
    if result.attribution is not None:
        attribution = tuple(part.detach().float().cpu().contiguous() for part in layout.parts(result.attribution))
    assert instance.scores is not None
    return MultiInputExplanation(
        method=method,
        heatmap=heatmaps,
        attribution=attribution,
        targets=target.classes.clone() if target.classes is not None else None,
        scores=instance.scores.detach().float().cpu(),
        inputs=tuple(x.detach().float().cpu().contiguous() for x in inputs),
        layer=instance.layer,
        options=opts,
        labels=target.describe(),
        extras={name: value.detach().float().cpu() for name, value in result.extras.items()},
    )
