"""The class activation map family: CAM, Grad-CAM, Grad-CAM++, Score-CAM, HiResCAM, XGradCAM, LayerCAM, Eigen-CAM,
Ablation-CAM, guided Grad-CAM (FullGrad: :mod:`.fullgrad`).

Each method is the base class plus the one function that weighs a layer's channels (pytorch-grad-cam's good
idea). Gradients stop at the layer: the part of the network below it runs without building a graph, and no
parameter gradient is ever computed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError, TargetError
from .backprop import GuidedBackprop
from .base import Method, Result, defaults, register


class CAMMethod(Method):
    """Weighs the feature maps of ``layer`` into one map per input; subclasses say how: the channel weights
    (:meth:`weights`), or the weighted maps themselves (:meth:`weighted`) where the weights vary by position."""

    uses_layer = True
    needs_module = True  # hooks the layer
    needs_spatial = True
    options = defaults(reshape=None, call=None, aug_smooth=False, eigen_smooth=False)
    needs_gradient = True
    # Whether the map keeps only its positive part (every CAM but Zhou et al.'s).
    relu: ClassVar[bool] = True
    blank_causes = (
        "a dead or zero head, a layer whose output does not reach the target (a class-token ViT's final norm: its "
        "patch tokens never reach the head; the last block's first norm, the default, does), or a class whose "
        "evidence is negative everywhere (Grad-CAM keeps the positive part)"
    )

    def attribute(self) -> Result:
        if self.opts.get("aug_smooth"):
            return Result(heatmap=augmented(self, self.layer_map))
        return Result(heatmap=self.layer_map())

    def layer_map(self) -> Tensor:
        """One map ``[N, h, w]`` at the layer's resolution for ``self.inputs``."""
        activations, grads = self.layer_signals()
        return self.cam(activations, grads)

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        """One map ``[N, h, w]`` from the layer's activations (and their gradients): the weighted maps summed over
        channels, or with ``eigen_smooth`` their first principal component; then the positive part."""
        weighted = self.weighted(activations, grads)
        cam = first_component(weighted) if self.opts.get("eigen_smooth") else weighted.sum(dim=1)
        return cam.clamp(min=0) if self.relu else cam

    def weighted(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        """The activations ``[N, C, h, w]`` weighted: by default, each channel by :meth:`weights`."""
        return self.weights(activations, grads) * activations

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        """One weight per channel and input, ``[N, C, 1, 1]``."""
        raise NotImplementedError

    def layer_layout(self, activation: Tensor) -> Callable[[Tensor], Tensor]:
        """How the layer's output becomes ``(N, C, *spatial)``: the ``reshape`` option, or the layout inferred
        from its shape (:func:`deepscope.probe.map_layout`): token sequences laid on their grid, channels-last maps
        permuted."""
        reshape = self.opts.get("reshape")
        if callable(reshape):
            return reshape
        if reshape not in (None, True, False):
            raise BadInputError(f"reshape={reshape!r} is not True, False, None or a callable.")
        shape, spatial = tuple(activation.shape), tuple(self.image.shape[2:])
        if activation.ndim < 3:
            raise BadInputError(
                f"layer {self.layer!r} outputs {shape}, which has no spatial axes; choose a layer with a feature map "
                "or tokens (the default is the last one that reaches the output)."
            )
        if reshape is False:
            if activation.ndim != self.image.ndim:
                raise BadInputError(
                    f"reshape=False reads layer {self.layer!r}'s output as channels first, (N, C, *spatial) like the "
                    f"inputs {tuple(self.image.shape)}, but it is {shape}; pass reshape=None to infer its layout."
                )
            return probe.MapLayout("channels_first", shape[2:]).to_map
        assert self.layer is not None
        module = probe.named_layer(self.model, self.layer)
        if activation.ndim == self.image.ndim:
            if reshape:
                return probe.MapLayout("channels_last", shape[1:-1]).to_map
            return (probe.map_layout(module, shape, spatial) or probe.MapLayout("channels_first", shape[2:])).to_map
        if activation.ndim == 3 and len(spatial) == 2:
            readings = probe.token_layouts(shape[1], spatial)
            if len(readings) == 1:
                return readings[0].to_map
            leading = ", ".join(map(str, probe.LEADING_TOKENS))
            said = (
                f"reads as {' or as '.join(str(r) for r in readings)}"
                if readings
                else f"has no grid of the inputs' aspect ({spatial[0]}x{spatial[1]}) after {leading} leading tokens"
            )
            raise BadInputError(
                f"layer {self.layer!r} outputs {shape}: tokens (N, tokens, C) whose count {said}; pass "
                "reshape=<callable (N, tokens, C) -> (N, C, H, W)>."
            )
        return probe.MapLayout("channels_first", shape[2:]).to_map

    def layer_signals(self) -> tuple[Tensor, Tensor | None]:
        """The layer's activations and, if the method needs them, d(score)/d(activations), as maps."""
        assert self.layer is not None
        first = True

        def start_graph(output: Tensor) -> Tensor:
            # Below the layer nothing needs a graph; from its first call on, autograd records.
            nonlocal first
            if not first or not self.needs_gradient:
                return output
            first = False
            torch.set_grad_enabled(True)
            return output.detach().requires_grad_(True)

        with probe.Hooks() as hooks, torch.no_grad():
            probe.replace_output(hooks, self.model, self.layer, start_graph)
            record = probe.capture(hooks, self.model, self.layer, call=self.opts.get("call"))
            scores, _ = self.forward(self.inputs, hooks)
            activation = record.output()
            self.layer_calls = len(record.outputs)
            grads = None
            if self.needs_gradient:
                if not scores.requires_grad:
                    raise TargetError(
                        f"the target does not depend on layer {self.layer!r}'s output; choose a layer between "
                        "the input and the target."
                    )
                (grads,) = torch.autograd.grad(scores.sum(), activation)
        self.scores = scores.detach()
        to_map = self.layer_layout(activation)
        return to_map(activation.detach()).float(), None if grads is None else to_map(grads).float()


def _spatial_axes(t: Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


# aug_smooth's brightness factors (pytorch-grad-cam's tta.Multiply), each with and without a left-right flip.
AUGMENT_FACTORS = (0.9, 1.0, 1.1)


def upsample(maps: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """Maps ``[N, *grid]`` (or ``[N, C, *grid]``) interpolated (bi/trilinear, half-pixel centres) to ``spatial``."""
    channels = maps.ndim == len(spatial) + 2
    x = maps if channels else maps[:, None]
    if tuple(x.shape[2:]) != spatial:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        x = F.interpolate(x.float(), size=spatial, mode=mode, align_corners=False)
    return x if channels else x[:, 0]


def scaled(maps: Tensor, axes: int = 1) -> Tensor:
    """Each map minus its minimum, over its maximum (+1e-7, as pytorch-grad-cam): [0, 1]; the first ``axes``
    axes index the maps."""
    flat = maps.reshape(*maps.shape[:axes], -1)
    flat = flat - flat.amin(dim=-1, keepdim=True)
    return (flat / (flat.amax(dim=-1, keepdim=True) + 1e-7)).reshape(maps.shape)


def augmented(method: Method, one_map: Callable[[], Tensor]) -> Tensor:
    """pytorch-grad-cam's test-time augmentation (``aug_smooth``): ``one_map()`` of the inputs, flipped left-right or
    not, times 0.9, 1 and 1.1, each brought to the inputs' resolution, scaled to [0, 1] per input (as the peer does,
    so that a brighter copy does not outweigh the others), flipped back and averaged. ``one_map`` reads
    ``method.inputs``, which holds each augmented copy in turn."""
    if method.layout.packed:
        raise BadInputError(
            f"{method.name}: aug_smooth flips and brightens one image tensor; with several inputs pass "
            "aug_smooth=False (the others can go as forward_args/forward_kwargs)."
        )
    clean = method.inputs
    scores = method.clean_scores()  # a predicted-class target is the clean inputs' class
    spatial = tuple(clean.shape[2:])
    maps = []
    try:
        for flip in (False, True):
            for factor in AUGMENT_FACTORS:
                method.inputs = (clean.flip(-1) if flip else clean) * factor
                one = scaled(upsample(one_map(), spatial))
                maps.append(one.flip(-1) if flip else one)
    finally:
        method.inputs = clean
        method.scores = scores
    return torch.stack(maps).mean(dim=0)


# Copying a model and tracing it with torch.fx run the model's own code on proxies, which raises whatever that code
# raises where it needs real values: control flow on traced values (TraceError), a traced value where Python wants
# a number or an array (TypeError, ValueError), ``len`` of one, a tensor that refuses deepcopy (RuntimeError,
# copy.Error), user checks (AssertionError, ...). The model itself already ran on these inputs, so any such error
# says that fx cannot take it, not that it is broken: it falls back to the model. Errors of the folding itself
# (deepscope's and torch's fusing code, after the trace) are not caught.
UNTRACEABLE = (Exception,)


def traced_copy(model: nn.Module) -> torch.fx.GraphModule | None:
    """A torch.fx trace of a copy of ``model`` (the model itself untouched); None where it cannot be copied or
    traced (:data:`UNTRACEABLE`)."""
    try:
        return torch.fx.symbolic_trace(copy.deepcopy(model))
    except UNTRACEABLE:
        return None


def folded(model: nn.Module, memory_format: torch.memory_format | None = None) -> nn.Module:
    """A traced copy of ``model`` (torch.fx) with each batch norm folded into the convolution before it, and its
    weights in ``memory_format``, for the many forward passes of a perturbation method: the same numbers to float
    rounding, one pass over memory less per batch norm, and no weight conversion per call where the inputs go
    channels last. The model itself where it is not all in eval mode (a batch norm's statistics are then the
    batch's), has no batch norm, or cannot be copied or traced (:data:`UNTRACEABLE`)."""
    modules = list(model.modules())
    if any(m.training for m in modules) or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules):
        return model
    from torch.fx.experimental.optimization import fuse

    traced = traced_copy(model)
    if traced is None:
        return model
    fast = fuse(traced, inplace=True, no_trace=True)
    return fast if memory_format is None else fast.to(memory_format=memory_format)


# torch's optimize_for_inference is experimental and fails on graphs it does not expect: an addition of a number
# to a tensor (timm's swin) raises AttributeError on the number. Its result is an optional speed-up over the folded
# copy, which gives the same numbers, so any error of it leaves the folded copy to run (folded() itself stays loud).
ONEDNN_PASS_ERRORS = (Exception,)


def on_mkldnn(model: nn.Module) -> nn.Module | None:
    """A traced copy of ``model`` through torch.fx's ``optimize_for_inference``: batch norms folded, dropouts
    removed, and its runs of convolutions, poolings, ReLUs and additions kept in oneDNN's blocked layout with their
    weights packed once, which runs resnet18's masked copies 1.3x faster on one CPU thread than :func:`folded`'s
    channels-last copy, to the same numbers to float rounding (bench/bench_scorecam.py). None where it does not
    apply: a model with a module in training mode, off the CPU or not float32 (oneDNN's layouts are float32 CPU
    ones), without a 2-d convolution (nothing gained), with forward hooks, or that cannot be copied or traced
    (:data:`UNTRACEABLE`), or that torch's pass fails on (:data:`ONEDNN_PASS_ERRORS`). A graph that runs an operation
    oneDNN's tensors lack only fails when run (:meth:`ScoreCAM.masked_model` checks it)."""
    modules = list(model.modules())
    parameters = [*model.parameters(), *model.buffers()]
    if any(m.training for m in modules) or not any(type(m) is nn.Conv2d for m in modules):
        return None
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return None  # the copy keeps them, and they would see oneDNN's tensors, which most code cannot read
    if any(p.device.type != "cpu" or (p.is_floating_point() and p.dtype != torch.float32) for p in parameters):
        return None
    from torch.fx.experimental.optimization import optimize_for_inference

    traced = traced_copy(model)
    if traced is None:
        return None
    with warnings.catch_warnings():
        # torch's oneDNN modules are TorchScript ones, whose decorator torch deprecates: its warning, not the user's.
        warnings.filterwarnings("ignore", message=".*torch.jit.script_method.* is deprecated", category=FutureWarning)
        try:
            return optimize_for_inference(traced)
        except ONEDNN_PASS_ERRORS:
            return None


def first_component(weighted: Tensor) -> Tensor:
    """Each input's positions projected on the first principal component of its channels (pytorch-grad-cam's
    ``eigen_smooth``, Eigen-CAM): ``[N, C, *grid]`` -> ``[N, *grid]``. A component's sign is arbitrary; it is chosen
    so that the projection correlates positively with the channels' sum (the map the projection smooths)."""
    n, grid = weighted.shape[0], weighted.shape[2:]
    rows = weighted.float().reshape(n, weighted.shape[1], -1).transpose(1, 2)  # [N, positions, C]
    rows = torch.nan_to_num(rows)
    rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    projection = (rows @ vh[:, 0, :, None])[..., 0]
    agreement = (projection * rows.sum(dim=2)).sum(dim=1, keepdim=True)
    projection = torch.where(agreement < 0, -projection, projection)
    return projection.reshape(n, *grid)


@register("gradcam")
class GradCAM(CAMMethod):
    """Selvaraju et al. 2017: channel weights alpha_k = mean over positions of d(score)/dA_k;
    map = ReLU(sum_k alpha_k A_k), upsampled bilinearly to the input."""

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        return grads.mean(dim=_spatial_axes(grads), keepdim=True)


@register("gradcam++")
class GradCAMPlusPlus(CAMMethod):
    """Chattopadhyay et al. 2018: Grad-CAM with pixel-wise weights from second and third derivatives
    (under the exponential-score assumption, as in the paper and pytorch-grad-cam)."""

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        axes = _spatial_axes(grads)
        g2, g3 = grads.pow(2), grads.pow(3)
        total = activations.sum(dim=axes, keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp(min=0) * alpha).sum(dim=axes, keepdim=True)


@register("scorecam")
class ScoreCAM(CAMMethod):
    """Wang et al. 2020: each channel, upsampled and scaled to [0, 1], masks the input; the target's scores on
    the masked inputs, softmaxed over channels, weigh the channels (as pytorch-grad-cam does). Gradient-free;
    costs one forward pass per distinct mask (:func:`distinct`) and input, batched by ``batch_size``."""

    # 16 masked copies a pass (the peer's default too): on a CPU their activations stay in cache, and resnet18 at
    # 224 px costs 10% less CPU time a copy than at 64 (bench/bench_scorecam.py).
    options = defaults(**CAMMethod.options, batch_size=16, precision="float32")
    needs_gradient = False
    single_input_only = "its channels mask one image"
    # The number types the masked passes may run in, and the autocast type of each (None: the model's own).
    PRECISIONS: ClassVar[dict[str, torch.dtype | None]] = {"float32": None, "bfloat16": torch.bfloat16}

    def attribute(self) -> Result:
        self.count("batch_size")  # checked before the forward pass
        self.autocast_type()
        return super().attribute()

    def autocast_type(self) -> torch.dtype | None:
        """The ``precision`` option's autocast type (None for float32, the model's own numbers), checked."""
        precision = self.opts["precision"]
        if not isinstance(precision, str) or precision not in self.PRECISIONS:
            raise BadInputError(
                f"{self.name}: precision={precision!r} is not one of {', '.join(map(repr, self.PRECISIONS))}."
            )
        return self.PRECISIONS[precision]

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        x = self.inputs
        n, k = activations.shape[:2]
        spatial = tuple(x.shape[2:])
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        masks = F.interpolate(activations, size=spatial, mode=mode, align_corners=True)
        flat = masks.reshape(n, k, -1)
        low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
        span = high - low
        masks = ((flat - low) / (span + 1e-8)).reshape(n, k, *spatial).to(x.dtype)
        peak = (span / (span + 1e-8))[..., 0]  # each mask's maximum: below 1 where the span is near 1e-8
        if self.target.unit is not None:
            raise TargetError("scorecam explains model outputs; a Unit target needs a gradient method.")
        scores = torch.empty(n, k, device=x.device)
        # One input at a time: the masks of its distinct channels run in batches; the target repeats for each copy.
        model = self.model
        with torch.no_grad():
            self.model, layout = self.masked_model(model, x)
            try:
                for i in range(n):
                    chosen, copies = distinct(activations[i], peak[i])
                    scores[i] = self.score_masked(x[i : i + 1], masks[i, chosen], i, layout)[copies]
            finally:
                self.model = model
        return scores.softmax(dim=1).view(n, k, *([1] * len(spatial))).to(activations)

    def masked_model(self, model: nn.Module, x: Tensor) -> tuple[nn.Module, torch.memory_format]:
        """The model the masked passes run through, and the memory layout of their inputs. In float32 on a CPU,
        its copy in oneDNN's layouts (:func:`on_mkldnn`) where it gives the model's output on the first input to
        float rounding; else, or in bfloat16 (oneDNN's layouts are float32 ones), a copy with its batch norms
        folded (:func:`folded`), its images channels last, which CPU convolutions run faster on (the same numbers
        to float rounding)."""
        if self.autocast_type() is None and x.device.type == "cpu":
            fast = on_mkldnn(model)
            if fast is not None and self.agrees(fast, x[:1]):
                return fast, torch.contiguous_format
        layout = torch.channels_last if x.ndim == 4 else torch.contiguous_format
        return folded(model, layout), layout

    def agrees(self, fast: nn.Module, x: Tensor) -> bool:
        """Whether ``fast`` gives ``self.model``'s scores on ``x`` (the first input) to float rounding; False where
        it cannot run it (an operation oneDNN's tensors lack raises a RuntimeError, which :meth:`run` reports as
        bad input: the model itself has just run on the same input)."""
        expected = self.run(x, of=0).float()
        model = self.model
        self.model = fast
        try:
            got = self.run(x, of=0).float()
        except (RuntimeError, BadInputError):
            return False
        finally:
            self.model = model
        scale = expected.abs().max().item()
        return got.shape == expected.shape and bool(((got - expected).abs() <= 1e-4 * scale + 1e-6).all())

    def score_masked(self, x: Tensor, masks: Tensor, i: int, layout: torch.memory_format) -> Tensor:
        """The target's score (of input ``i``) on the input ``x`` [1, ...] masked by each of ``masks`` [M, ...], in
        the ``precision`` option's number type."""
        batch_size = self.count("batch_size")
        dtype = self.autocast_type()
        scores = torch.empty(len(masks), device=x.device)
        for start in range(0, len(masks), batch_size):
            chunk = (x * masks[start : start + batch_size, None]).contiguous(memory_format=layout)
            with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                outputs = self.run(chunk, of=i)
            scores[start : start + len(chunk)] = self.target.scores(outputs, of=i).float()
        return scores


def distinct(maps: Tensor, peaks: Tensor, tolerance: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Channels ``[K, *grid]`` whose Score-CAM masks are the same, found once: a mask is its channel upsampled (a
    linear map), minus its minimum, times its ``peaks`` [K] over its span. Two channels equal up to a positive scale
    and a shift (a single active cell at the same place, say) with the same peak therefore have the same mask, and
    so have all constant channels (mask 0). Maps so scaled that differ by at most ``tolerance`` (float rounding)
    count as one. Returns one channel of each kind, and for each channel the index of its kind among them."""
    flat = maps.reshape(len(maps), -1).double()
    low, spread = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True) - flat.amin(dim=1, keepdim=True)
    unit = torch.where(spread > 0, (flat - low) / torch.where(spread > 0, spread, 1), 0)
    keys = torch.cat([unit, peaks[:, None].double()], dim=1).cpu().numpy()
    # Near keys have near sums: each channel is compared only with those whose sum is within reach of its own.
    sums = keys.sum(axis=1)
    order = np.argsort(sums, kind="stable")
    ordered, reach = sums[order], tolerance * keys.shape[1]
    kind = np.full(len(keys), -1)
    chosen: list[int] = []
    for channel in range(len(keys)):  # each channel not yet placed starts a kind, with the channels near it
        if kind[channel] >= 0:
            continue
        start = np.searchsorted(ordered, sums[channel] - reach, side="left")
        stop = np.searchsorted(ordered, sums[channel] + reach, side="right")
        candidates = order[start:stop]
        candidates = candidates[kind[candidates] < 0]
        near = np.abs(keys[candidates] - keys[channel]).max(axis=1) <= tolerance
        kind[candidates[near]] = len(chosen)
        chosen.append(channel)
    return torch.tensor(chosen, device=maps.device), torch.from_numpy(kind).to(maps.device)


@register("hirescam")
class HiResCAM(CAMMethod):
    """Draelos & Carin 2020: the activations times their gradients, position by position, summed over channels
    (no averaging of the gradients): for a layer followed by global average pooling and the head, the map's mean
    is the score's share that flows through the layer (Grad-CAM's is not)."""

    def weighted(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        return grads * activations


@register("xgradcam")
class XGradCAM(CAMMethod):
    """Fu et al. 2020 (Axiom-based Grad-CAM): channel weights sum_positions(A_k * dS/dA_k) / sum_positions(A_k),
    the gradients averaged with the activations' weights."""

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        axes = _spatial_axes(grads)
        return (grads * activations).sum(dim=axes, keepdim=True) / (activations.sum(dim=axes, keepdim=True) + 1e-7)


@register("layercam")
class LayerCAM(CAMMethod):
    """Jiang et al. 2021: each position of each channel weighted by its own positive gradient,
    map = ReLU(sum_k ReLU(dS/dA_k) * A_k); sharper than Grad-CAM at shallow layers."""

    def weighted(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        assert grads is not None
        return grads.clamp(min=0) * activations


@register("eigencam")
class EigenCAM(CAMMethod):
    """Muhammad & Yeasin 2020: the first principal component of the layer's activations (centred over positions),
    without gradients or the target: what the layer responds to most, whatever the class. The component's sign
    is chosen to agree with the channels' sum; the map keeps the positive part."""

    needs_gradient = False

    def weighted(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        return activations

    def cam(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        return first_component(activations).clamp(min=0)


@register("ablationcam")
class AblationCAM(CAMMethod):
    """Desai & Ramaswamy 2020: each channel of the layer set to zero in turn, the rest of the network run on;
    channel weight = (score - score without the channel) / score. Gradient-free; one forward pass per channel and
    input, batched by ``batch_size`` (the part below the layer runs again for each batch)."""

    options = defaults(**CAMMethod.options, batch_size=64)
    needs_gradient = False

    def attribute(self) -> Result:
        self.count("batch_size")  # checked before the forward pass
        return super().attribute()

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        if self.target.unit is not None:
            raise TargetError("ablationcam explains model outputs; a Unit target needs a gradient method.")
        assert self.layer is not None and self.scores is not None
        clean = self.scores.float()
        n, k = activations.shape[:2]
        batch_size = self.count("batch_size")
        calls = self.layer_calls
        chosen = self.opts.get("call")
        chosen = calls - 1 if chosen is None else chosen % calls
        ablated = torch.empty(n, k, device=clean.device)
        channels = torch.arange(0)
        seen = 0

        def ablate(output: Tensor) -> Tensor:
            nonlocal seen
            seen += 1
            if seen - 1 != chosen:
                return output
            changed = output.clone()
            as_map = self.layer_layout(changed)(changed)
            if as_map.untyped_storage().data_ptr() != changed.untyped_storage().data_ptr():
                raise BadInputError(
                    f"ablationcam zeroes channels of layer {self.layer!r}'s output through its map; the reshape "
                    "option's callable must return a view of that output (reshape/permute, no copy)."
                )
            as_map[torch.arange(len(channels)), channels.to(as_map.device)] = 0
            return changed

        with torch.no_grad(), probe.Hooks() as hooks:
            probe.replace_output(hooks, self.model, self.layer, ablate)
            for i in range(n):
                for start in range(0, k, batch_size):
                    channels = torch.arange(start, min(start + batch_size, k))
                    seen = 0
                    chunk = self.inputs[i : i + 1].expand(len(channels), *self.inputs.shape[1:])
                    output = self.run(chunk, of=i)
                    ablated[i, start : start + len(channels)] = self.target.scores(output, of=i).float()
        weights = (clean[:, None].to(ablated.device) - ablated) / clean[:, None].to(ablated.device)
        return weights.view(n, k, *([1] * (activations.ndim - 2))).to(activations)


@register("cam")
class CAM(CAMMethod):
    """Zhou et al. 2016, for networks ending in global average pooling and a linear layer: the class's
    weights in that layer (``head``, default the last ``nn.Linear``) weigh the layer's feature maps.
    No ReLU: the map's spatial mean equals the class logit minus its bias."""

    options = defaults(**CAMMethod.options, head=None)
    needs_gradient = False
    relu = False

    def weights(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        head = self._head()
        if head.in_features != activations.shape[1]:
            raise BadInputError(
                f"cam: layer {self.layer!r} has {activations.shape[1]} channels but the head takes "
                f"{head.in_features} features; CAM needs the feature map that global average pooling feeds "
                "into the head (choose that layer, or use gradcam for other architectures)."
            )
        if self.target.classes is None:
            raise TargetError("cam explains a class of the linear head; pass a class target (or None).")
        weights = head.weight.detach().float()[self.target.classes.to(head.weight.device)]
        return weights.view(*weights.shape, *([1] * (activations.ndim - 2))).to(activations.device)

    def _head(self) -> nn.Linear:
        name = self.opts.get("head")
        if name is not None:
            head = probe.named_layer(self.model, name)
            if not isinstance(head, nn.Linear):
                raise BadInputError(f"head {name!r} is a {type(head).__name__}, not nn.Linear.")
            return head
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise BadInputError("cam needs a model ending in global average pooling and nn.Linear; it has none.")
        return linears[-1]


@register("guided_gradcam")
class GuidedGradCAM(GradCAM):
    """Selvaraju et al. 2017: guided backprop times the Grad-CAM map upsampled to the input.

    With ``aug_smooth`` the Grad-CAM factor is pytorch-grad-cam's smoothed map (in [0, 1]), as its example script
    multiplies that map by the guided gradient; the guided gradient is the clean input's."""

    single_input_only = "its Grad-CAM map weighs one image's guided gradient"
    options = defaults(reshape=None, call=None, eigen_smooth=False, aug_smooth=False)

    def attribute(self) -> Result:
        spatial = tuple(self.inputs.shape[2:])
        cam = augmented(self, self.layer_map) if self.opts.get("aug_smooth") else upsample(self.layer_map(), spatial)
        upsampled = cam[:, None]
        guided = GuidedBackprop(
            self.model, self.inputs, self.target, None, {**GuidedBackprop.options, **self.common_options()}
        )
        gradient = guided.gradient(self.inputs).float()
        attribution = gradient * upsampled
        return Result(attribution=attribution, heatmap=attribution.abs().amax(dim=1))
