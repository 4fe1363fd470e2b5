"""Gradient methods: saliency, input x gradient, integrated gradients, SmoothGrad."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from .. import probe
from ..batches import batches as as_batches
from ..errors import BadInputError, TargetError, close_names
from . import quadrature
from .base import Method, Result, defaults, is_integer, method_class, register
from .inputs import Layout


class GradientMethod(Method):
    """A method whose attribution is built from d(score)/d(input); subclasses may change the backward rule.

    With a ``layer`` the same method attributes to that layer's output instead of the inputs (Captum's
    ``LayerGradientXActivation``, ``LayerIntegratedGradients``, ...): the gradient starts at the layer, so the
    inputs may be integers (token ids) that reach the network through an embedding lookup.
    """

    # Runs the model and differentiates (backward rules rewrite torch's ReLU calls, not modules): any function of
    # the inputs will do. Only a layer needs a module, and explain() refuses layers for functions.
    needs_module = False
    uses_layer = True
    layer_optional = True

    def gradient(self, inputs: Tensor, at: Tensor | None = None) -> Tensor:
        """d(target score)/d(inputs); with a layer, d(target score)/d(its output), evaluated with the layer's output
        replaced by ``at`` when given (a point on a path at the layer)."""
        if self.layer is None:
            return self.input_gradient(inputs)
        return self.layer_gradient(inputs, at)

    def point(self, inputs: Tensor) -> Tensor:
        """Where the attribution lives: the inputs, or the layer's output on them."""
        return inputs if self.layer is None else self.layer_output(inputs)

    def layer_output(self, inputs: Tensor) -> Tensor:
        """The layer's output on ``inputs``, without gradients."""
        assert self.layer is not None
        with probe.Hooks() as hooks, torch.no_grad():
            record = probe.capture(hooks, self.model, self.layer)
            self.run(inputs)
        return self._single_call(record).detach()

    def layer_gradient(self, inputs: Tensor, at: Tensor | None = None) -> Tensor:
        """d(target score)/d(the layer's output) on ``inputs``, with that output replaced by ``at`` when given.

        The forward pass runs without a graph up to the layer; from the layer on autograd records (as the CAM
        family does), so nothing below the layer is differentiated and integer inputs are fine.
        """
        scores, leaf = self.layer_forward(inputs, at)
        (grad,) = torch.autograd.grad(scores.sum(), leaf)
        if at is None and self.scores is None:
            self.scores = scores.detach()
        return grad

    def layer_forward(self, inputs: Tensor, at: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The target's scores on ``inputs`` with a graph from the layer's output on, and that output (``at`` in
        its place when given), the leaf to differentiate by: :meth:`layer_gradient` without the backward pass, for
        a method that runs its forward pass under backward rules (DeepLift)."""
        assert self.layer is not None
        calls = 0

        def start_graph(output: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise self._runs_again()
            values = output if at is None else at
            if values.shape != output.shape:
                raise BadInputError(
                    f"layer {self.layer!r} outputs {tuple(output.shape)}, but the values to put in its place have "
                    f"shape {tuple(values.shape)}."
                )
            torch.set_grad_enabled(True)  # restored when the surrounding no_grad block ends
            return values.detach().to(output.dtype).requires_grad_(True)

        with probe.Hooks() as hooks, torch.no_grad():
            probe.replace_output(hooks, self.model, self.layer, start_graph)
            record = probe.capture(hooks, self.model, self.layer)
            scores, _ = self.forward(inputs, hooks)
            leaf = self._single_call(record)
            if not scores.requires_grad:
                raise TargetError(
                    f"the target does not depend on layer {self.layer!r}'s output; choose a layer between the "
                    "inputs and the target."
                )
        return scores, leaf

    def _single_call(self, record: probe.Capture) -> Tensor:
        """The layer's one output; a layer that runs several times per forward pass has no single output to
        attribute to (replacing it would replace every call)."""
        if len(record.outputs) > 1:
            raise self._runs_again()
        return record.output()

    def _runs_again(self) -> BadInputError:
        return BadInputError(
            f"layer {self.layer!r} runs more than once in one forward pass; attributing to a layer's output needs "
            "a layer that runs once (a module used once, or its parent block)."
        )

    def reduce(self, attribution: Tensor) -> Tensor:
        """As :meth:`Method.reduce`; at a layer whose output has other axes than the inputs (tokens ``[N, T, D]``
        of token ids ``[N, T]``, say), the features are the last axis, so the heatmap is per token ``[N, T]``."""
        if self.layer is not None and attribution.ndim >= 3 and attribution.ndim != self.inputs.ndim:
            return super().reduce(attribution.movedim(-1, 1))
        return super().reduce(attribution)


@register("saliency")
class Saliency(GradientMethod):
    """Simonyan et al. 2014: the gradient of the unnormalised class score w.r.t. the input.

    ``attribution`` is the signed gradient; ``heatmap`` its maximum absolute value over channels
    (``reduce='sum_abs'`` sums instead).
    """

    options = defaults(reduce="max_abs")
    default_reduce = "max_abs"

    def attribute(self) -> Result:
        return Result(attribution=self.gradient(self.inputs))


@register("input_x_gradient")
class InputXGradient(GradientMethod):
    """Input times gradient (Shrikumar et al. 2016); heatmap: the channel sum."""

    options = defaults(reduce="sum")

    def attribute(self) -> Result:
        return Result(attribution=self.point(self.inputs) * self.gradient(self.inputs))


def make_baseline(baseline: object, inputs: Tensor, data: object = None) -> Tensor:
    """The baseline tensor for a ``baseline`` option (see the shared vocabulary).

    ``"mean"`` is the per-channel mean of ``data`` (a data set in any form :mod:`deepscope.batches` accepts) when
    one is given, else of ``inputs``; ``data`` with any other baseline is an error, since it would be ignored.
    """
    if data is not None and not (isinstance(baseline, str) and baseline == "mean"):
        raise BadInputError(
            f"data= is given but baseline={baseline!r}; the data set is only used by baseline='mean' (its "
            "per-channel mean), so pass baseline='mean' or leave data out."
        )
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(inputs), inputs.shape)
        except RuntimeError:
            raise BadInputError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to inputs {tuple(inputs.shape)}."
            ) from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise BadInputError(f"baseline={baseline!r} is not a finite number.")
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, str) and baseline == "mean":
        means = inputs if data is None else data
        mean = channel_mean(means, inputs.shape[1] if inputs.ndim > 1 else None)
        shape = (1, -1, *([1] * (inputs.ndim - 2))) if inputs.ndim > 1 else (1,)
        return mean.to(inputs).reshape(shape).expand_as(inputs).clone()
    if isinstance(baseline, str) and baseline == "blur":
        if inputs.ndim != 4:
            raise BadInputError("baseline='blur' needs images (N, C, H, W).")
        return gaussian_blur(inputs, sigma=max(inputs.shape[-2:]) / 20)
    raise BadInputError(f"baseline={baseline!r} is not a number, 'mean', 'blur' or a tensor.")


def input_baselines(option: object, inputs: Tensor, layout: Layout, data: object = None) -> Tensor:
    """:func:`make_baseline` for each input, packed like them: among several inputs ``option`` is one baseline
    for all or a tuple with one per input (a number, "mean", "blur" or a tensor, per sample or not)."""
    if not layout.packed:
        return make_baseline(option, inputs, data)
    if data is not None:
        raise BadInputError(
            "data= (for baseline='mean') takes one input tensor's data set; with several inputs give each input "
            "its baseline: a number, 'mean' (of the inputs) or a tensor, in a tuple with one entry per input."
        )
    options = layout.each(option, "baseline")
    return layout.map(lambda j, part: make_baseline(options[j], part), inputs)


def channel_mean(data: object, channels: int | None) -> Tensor:
    """The per-channel mean ``[C]`` (float64) of a data set's inputs ``[N, C, ...]``, over samples and positions;
    for inputs ``[N]`` (``channels`` None) the mean of all values, as ``[1]``. Streams the data in batches."""
    total: Tensor | None = None
    count = 0
    for inputs, _labels in as_batches(data, what="data"):
        if not inputs.is_floating_point():
            raise BadInputError(
                f"data holds {inputs.dtype} inputs; give the model's float inputs (preprocessed as the inputs are)."
            )
        if channels is None:
            flat = inputs.detach().reshape(1, -1)
        else:
            if inputs.ndim < 2 or inputs.shape[1] != channels:
                raise BadInputError(
                    f"data has a batch of shape {tuple(inputs.shape)} but the inputs have {channels} channels; "
                    f"give the data set the inputs come from, as [N, {channels}, ...] batches."
                )
            flat = inputs.detach().transpose(0, 1).reshape(channels, -1)
        part = flat.double().sum(dim=1).cpu()
        total = part if total is None else total + part
        count += flat.shape[1]
    if total is None or count == 0:
        raise BadInputError("data holds no inputs; give at least one batch.")
    return total / count


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` with reflected borders."""
    radius = max(1, int(3 * sigma))
    radius = min(radius, min(images.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    padded = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = torch.nn.functional.conv2d(padded, horizontal, groups=channels)
    return torch.nn.functional.conv2d(out, vertical, groups=channels)


@register("integrated_gradients")
class IntegratedGradients(GradientMethod):
    """Sundararajan et al. 2017: (x - baseline) times the path integral of the gradient from baseline to x.

    The integral uses the quadrature rule ``integration`` with ``steps`` nodes: Gauss-Legendre by default (Captum's
    default too), or a Riemann sum; all steps of all inputs go through the model in batches of ``batch_size`` rows.
    The attributions sum to about f(x) - f(baseline) (completeness); the relative error of that sum is reported per
    input as ``extras["completeness_error"]``, with the steps used as ``extras["steps"]``. With ``completeness=``
    a tolerance on that error, the steps double until every input is within it (at most ``max_steps``).
    ``multiply_by_inputs=False`` returns the path's mean gradient without the factor (x - baseline) (Captum's
    switch).

    With a ``layer``, the path runs between the layer's outputs on the baseline and on the inputs, put in the
    layer's place while the model runs on the inputs (Captum's ``LayerIntegratedGradients``). For token ids the
    ``baseline`` is a token id or a tensor of ids like the inputs (``pad_ids``; the default 0 is token id 0, as in
    Captum), or a float tensor in the layer's output shape (``torch.zeros``: a zero embedding).
    """

    options = defaults(
        baseline=0.0,
        steps=50,
        integration="gauss_legendre",
        completeness=None,
        max_steps=1024,
        batch_size=64,
        multiply_by_inputs=True,
        reduce="sum",
    )

    def attribute(self) -> Result:
        steps, batch_size = self.count("steps"), self.count("batch_size")
        multiply = self.opts["multiply_by_inputs"]
        if not isinstance(multiply, bool):
            raise BadInputError(f"multiply_by_inputs={multiply!r} must be True or False.")
        rule = self.opts["integration"]
        quadrature.nodes(rule, steps)  # a bad rule or too few steps fails before the model runs
        tolerance = self.tolerance()
        max_steps = self.count("max_steps", minimum=steps) if tolerance is not None else steps
        clean = self.clean_scores()
        origin, end = self.endpoints(self.inputs)
        # f(x) - f(baseline), the sum the attributions should have: one forward pass (of the baselines) more.
        change = (clean - self.score_at(origin)).double()
        while True:
            gradient = self.integrate(origin, end, quadrature.nodes(rule, steps), batch_size)
            attribution = (end - origin).float() * gradient
            error = completeness_error(attribution, change)
            if tolerance is None or bool((error <= tolerance).all()) or steps >= max_steps:
                break
            steps = min(2 * steps, max_steps)
        if tolerance is not None and not bool((error <= tolerance).all()):
            worst = int(error.argmax())
            warnings.warn(
                f"integrated_gradients: completeness={tolerance:g} not reached in max_steps={max_steps} steps: the "
                f"error of input {worst} is {float(error[worst]):.3g} (f(x) - f(baseline) = "
                f"{float(change[worst]):.3g}; a change near 0 makes any relative error large). Raise max_steps, or "
                "read extras['completeness_error'].",
                stacklevel=3,
            )
        n = attribution.shape[0]
        if not multiply:  # the path's mean gradient (Captum's multiply_by_inputs=False)
            attribution = gradient
        extras = {"completeness_error": error.float(), "steps": torch.full((n,), float(steps))}
        return Result(attribution=attribution, extras=extras)

    def tolerance(self) -> float | None:
        """The ``completeness`` option: None, or a positive relative error."""
        value = self.opts["completeness"]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 < value < math.inf:
            raise BadInputError(
                f"completeness={value!r} must be a positive number, the largest relative error accepted for "
                "|sum(attribution) - (f(x) - f(baseline))| / |f(x) - f(baseline)| (0.01 for 1 %), or None."
            )
        return float(value)

    def integrate(self, origin: Tensor, end: Tensor, nodes: quadrature.Nodes, batch_size: int) -> Tensor:
        """The quadrature of the gradient along the straight path from origin to end (its mean on the path)."""
        x = self.inputs
        alphas = torch.tensor(nodes[0], dtype=end.dtype, device=end.device)
        weights = torch.tensor(nodes[1], dtype=torch.float32, device=end.device)
        steps = len(alphas)
        total = torch.zeros_like(end, dtype=torch.float32)
        n = x.shape[0]
        shape = (-1,) + (1,) * end.ndim
        # Rows are (step, input) pairs, step-major, so one chunk holds whole steps when batch_size >= n.
        per_chunk = max(1, batch_size // n)
        for start in range(0, steps, per_chunk):
            chunk = alphas[start : start + per_chunk]
            path = (origin + chunk.view(shape) * (end - origin)).reshape(-1, *end.shape[1:])
            if self.layer is None:
                grads = self.gradient(path)
            else:  # the model runs on the inputs, once per step, with the path in the layer's place
                grads = self.gradient(x.repeat(len(chunk), *([1] * (x.ndim - 1))), at=path)
            grads = grads.reshape(len(chunk), *end.shape).float()
            total += (grads * weights[start : start + per_chunk].view(shape)).sum(dim=0)
        return total

    def score_at(self, point: Tensor) -> Tensor:
        """The target's scores at a point of the path: the inputs ``point``, or with a layer, the inputs with
        ``point`` in the layer's place."""
        with torch.no_grad():
            if self.layer is None:
                return self.forward(point)[0]
            with probe.Hooks() as hooks:
                probe.replace_output(hooks, self.model, self.layer, lambda output: point.to(output.dtype))
                return self.forward(self.inputs, hooks)[0]

    def endpoints(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The path's start (the baseline) and end (the inputs): in the inputs' space, or the layer's outputs."""
        baseline = self.opts["baseline"]
        if self.layer is None:
            return input_baselines(baseline, x, self.layout), x
        end = self.layer_output(x)
        if isinstance(baseline, Tensor) and baseline.is_floating_point() and is_integer(x):
            return at_layer(baseline, end, self.layer), end  # already at the layer: a float cannot be token ids
        starts = id_baseline(baseline, x) if is_integer(x) else make_baseline(baseline, x)
        return self.layer_output(starts), end


def completeness_error(attribution: Tensor, change: Tensor) -> Tensor:
    """Per input, |sum(attribution) - change| / |change| (float64), where ``change`` is f(x) - f(baseline); 0 where
    both are 0, infinite where only the change is 0."""
    gap = (attribution.reshape(len(attribution), -1).double().sum(dim=1) - change).abs()
    scale = change.abs()
    unscaled = torch.where(gap > 0, math.inf, 0.0).to(gap)
    return torch.where(scale > 0, gap / scale.clamp_min(torch.finfo(torch.float64).tiny), unscaled)


def at_layer(baseline: Tensor, end: Tensor, layer: object) -> Tensor:
    """A float baseline given for token ids: it stands for the layer's output ``end``, broadcast to its shape; a
    :class:`BadInputError` saying so where it does not broadcast."""
    try:
        return torch.broadcast_to(baseline.to(end), end.shape)
    except RuntimeError:
        raise BadInputError(
            f"baseline of shape {tuple(baseline.shape)} is a float tensor, so it stands for layer "
            f"{layer!r}'s output, {tuple(end.shape)}, but does not broadcast to it; pass token ids "
            "shaped like the inputs, or a float tensor shaped like the layer's output."
        ) from None


def id_baseline(baseline: object, ids: Tensor) -> Tensor:
    """The baseline token ids for integer inputs: one id for every position, or a tensor of ids like ``ids``."""
    if isinstance(baseline, Tensor) and is_integer(baseline):
        try:
            return torch.broadcast_to(baseline.to(ids), ids.shape)
        except RuntimeError:
            raise BadInputError(
                f"baseline ids of shape {tuple(baseline.shape)} do not broadcast to the inputs {tuple(ids.shape)}."
            ) from None
    whole = isinstance(baseline, (int, np.integer)) or (isinstance(baseline, float) and baseline.is_integer())
    if whole and not isinstance(baseline, bool):
        return torch.full_like(ids, int(baseline))  # type: ignore[call-overload]
    raise BadInputError(
        f"baseline={baseline!r} does not fit integer inputs (token ids): pass a token id (an int, such as the "
        "padding id), a tensor of ids shaped like the inputs, or a float tensor shaped like the layer's output "
        "(torch.zeros(...) for a zero embedding)."
    )


@register("smoothgrad")
class SmoothGrad(Method):
    """Smilkov et al. 2017: the average over noisy copies of the input of another gradient method.

    ``base`` names the averaged method (``saliency`` by default; ``guided_backprop``, ``input_x_gradient``,
    ``deconvnet``, ``integrated_gradients``, ``deeplift``, ``gradient_shap`` work too); the base's own options
    (``baseline``, ``steps``, ``integration``, ``multiply_by_inputs``, ``reduce``) are passed to it when given,
    as Captum's ``NoiseTunnel`` passes its keyword arguments. ``noise`` is the standard deviation as a fraction of
    each input's value range (the paper's 10-20 %). ``nt_type`` names Captum's three ways to combine the samples:
    ``"smoothgrad"``, the mean of the attributions (heatmap: the mean of the base's heatmaps);
    ``"smoothgrad_sq"``, the mean of their squares; ``"vargrad"`` (Adebayo et al. 2018), their variance (the
    mean of the squares minus the square of the mean); for those two the heatmap is the base's reduction of the
    result.
    """

    options = defaults(
        base="saliency",
        samples=25,
        noise=0.15,
        batch_size=64,
        seed=None,
        nt_type="smoothgrad",
        baseline=None,
        steps=None,
        integration=None,
        multiply_by_inputs=None,
        reduce=None,
    )
    needs_module = False  # its bases are gradient methods, which take functions
    # With a layer, the noise still goes into the inputs and the base attributes to the layer (as Captum's
    # NoiseTunnel around a layer method).
    uses_layer = True
    layer_optional = True
    # The options passed to the base method when given (None: the base's default).
    PASSED = ("baseline", "steps", "integration", "multiply_by_inputs", "reduce")
    KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")

    def base_method(self) -> type[Method]:
        """The averaged method's class, with the checks that it can be averaged here."""
        base_cls = method_class(str(self.opts["base"]))
        if not issubclass(base_cls, GradientMethod) or base_cls is type(self):
            raise BadInputError(
                f"smoothgrad cannot average {self.opts['base']!r}; use a gradient method such as 'saliency', "
                "'input_x_gradient', 'guided_backprop', 'deconvnet', 'integrated_gradients' or 'deeplift'."
            )
        if self.layer is not None and not base_cls.uses_layer:
            raise BadInputError(f"smoothgrad: base={base_cls.name!r} does not attribute to a layer; drop layer=.")
        return base_cls

    def base_options(self, base_cls: type[Method]) -> dict[str, object]:
        opts: dict[str, object] = {**base_cls.options, **self.common_options()}
        for name in self.PASSED:
            value = self.opts[name]
            if value is None:
                continue
            if name not in base_cls.options:
                takes = ", ".join(n for n in self.PASSED if n in base_cls.options) or "none of them"
                raise BadInputError(
                    f"smoothgrad: {name}={value!r} is not an option of base={base_cls.name!r}, which takes {takes}."
                )
            opts[name] = value
        return opts

    def attribute(self) -> Result:
        kind = self.opts["nt_type"]
        if kind not in self.KINDS:
            near = close_names(str(kind), self.KINDS)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise BadInputError(f"nt_type={kind!r} is not one of {', '.join(map(repr, self.KINDS))}.{hint}")
        base_cls = self.base_method()
        if is_integer(self.inputs):
            raise BadInputError(
                f"smoothgrad adds noise to the inputs, and these are integers ({self.inputs.dtype}: token ids?); "
                "use saliency, input_x_gradient or integrated_gradients at the layer instead."
            )
        samples, batch_size = self.count("samples"), self.count("batch_size")
        self.clean_scores()
        x = self.inputs
        n = x.shape[0]
        noise_level = float(self.opts["noise"])

        def scale(_j: int, part: Tensor) -> Tensor:  # each input's own value range, per row
            flat = part.reshape(n, -1)
            sigma = noise_level * (flat.amax(dim=1) - flat.amin(dim=1))
            return sigma.view((n,) + (1,) * (part.ndim - 1)).expand_as(part)

        sigma = self.layout.map(scale, x)
        generator = self.generator(x.device)
        base = base_cls(self.model, x, self.target, self.layer, self.base_options(base_cls), self.layout)
        per_chunk = max(1, batch_size // n)
        attribution: Tensor | None = None  # shaped like the inputs, or like the layer's output
        squares: Tensor | None = None
        heatmaps: list[Tensor | None] = [None] * len(self.layout)
        for start in range(0, samples, per_chunk):
            k = min(per_chunk, samples - start)
            # Drawn in float32: a seed gives the same noise whatever the inputs' dtype (torch 2.4's half-precision
            # sampler on the CPU draws another stream).
            noise = torch.randn((k, *x.shape), generator=generator, device=x.device).to(x.dtype)
            noisy = (x.unsqueeze(0) + noise * sigma.unsqueeze(0)).reshape(k * n, *x.shape[1:])
            base.inputs = noisy
            part = base.attribute().attribution
            assert part is not None
            part = part.reshape(k, n, *part.shape[1:]).float()
            attribution = part.sum(dim=0) if attribution is None else attribution + part.sum(dim=0)
            if kind != "smoothgrad":
                squared = (part**2).sum(dim=0)
                squares = squared if squares is None else squares + squared
                continue
            for j, maps in enumerate(base.heatmaps(part.reshape(k * n, *part.shape[2:]))):
                if maps is not None:
                    summed = maps.reshape(k, n, *maps.shape[1:]).sum(dim=0)
                    total = heatmaps[j]
                    heatmaps[j] = summed if total is None else total + summed
        assert attribution is not None
        mean = attribution / samples
        if kind != "smoothgrad":
            assert squares is not None
            combined = squares / samples if kind == "smoothgrad_sq" else (squares / samples - mean**2).clamp_min(0)
            maps = tuple(base.heatmaps(combined))
            return Result(attribution=combined, heatmap=maps if self.layout.packed else maps[0])
        means = tuple(None if total is None else total / samples for total in heatmaps)
        return Result(attribution=mean, heatmap=means if self.layout.packed else means[0])
