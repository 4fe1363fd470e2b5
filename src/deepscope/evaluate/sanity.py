"""Sanity checks for saliency maps: model-parameter randomisation (Adebayo et al. 2018).

An explanation that explains the model must change when the model's learned parameters are destroyed. The
check re-initialises the model's layers, from the output down to the input, and measures how similar each
method's map on the randomised model stays to its map on the trained one. A method whose maps stay the same
(an edge detector in disguise) fails the check, however convincing its pictures look.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError
from ..explain.base import _check_options, explain, method_class
from ..render import FigureDisplay, NotebookFigure, new_figure, overlay, to_image_array
from ..targets import Target, TargetSpec

MapFunction = Callable[[nn.Module, Tensor], Tensor]

METRICS = ("spearman", "spearman_abs", "ssim", "hog")
_METRIC_LABELS = {
    "spearman": "Spearman rank correlation",
    "spearman_abs": "Spearman (absolute values)",
    "ssim": "SSIM",
    "hog": "HOG similarity (Pearson)",
}

# SSIM as Wang et al. 2004 and skimage's structural_similarity(gaussian_weights=True, sigma=1.5, win_size=7,
# use_sample_covariance=False, data_range=1): Gaussian weights truncated at 3.5 sigma (scipy's default filter
# extent there), symmetric padding, and the mean taken away from a border of half the 7-pixel window.
_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 7
_SSIM_K1, _SSIM_K2 = 0.01, 0.03

# HOG as Dalal & Triggs 2005 and skimage.feature.hog(orientations=9, cells_per_block=(2, 2), block_norm="L2-Hys"),
# with cells sized so that every map, whatever its resolution, is described on the same grid of 8 x 8 cells.
HOG_ORIENTATIONS = 9
HOG_CELLS = 8
HOG_BLOCK = 2


@dataclass
class SanityCheck(FigureDisplay):
    """The similarity of each method's maps on progressively (or singly) randomised models to the original maps.

    Attributes:
        mode: ``"cascading"``, ``"independent"`` or ``"data"`` (:func:`data_randomization_check`).
        methods: the method names (a callable's ``__name__``), in the order given.
        steps: ``"original"`` then the name of the layer re-initialised at each step (cascading: that layer and
            every one before it in this list).
        scores: ``scores[method][metric]`` a ``[steps, N]`` tensor, metric one of ``"spearman"``,
            ``"spearman_abs"``, ``"ssim"``, ``"hog"``; row 0 compares the original map with itself.
        maps: ``maps[method]`` the heatmaps ``[steps, N, H, W]`` (row 0: the trained model's).
        inputs: the inputs checked (CPU float32), kept for rendering.
        targets: the classes explained (the trained model's predictions by default), ``None`` for a callable or
            unit target.
    """

    mode: str
    methods: list[str]
    steps: list[str]
    scores: dict[str, dict[str, Tensor]]
    maps: dict[str, Tensor]
    inputs: Tensor
    targets: Tensor | None = None

    def mean_over_steps(self, method: str, metric: str = "spearman") -> Tensor:
        """Per input ``[N]``: the method's similarity averaged over the randomisation steps (every step after
        ``"original"``), each step weighing the same: its curve in :meth:`figure` as one number.

        The one number that summarises the whole cascade. The last step alone (every layer random) hides a method
        whose maps survive the randomisation of the top layers and fall apart only with the first convolution, as
        guided backprop's do (Adebayo et al. 2018); the mean counts every step it survived.
        """
        if self.mode == "data":
            raise BadInputError(
                "a data randomisation check compares models trained on true and on random labels, not a cascade; "
                "read its steps one by one in scores[method][metric]."
            )
        if method not in self.scores:
            raise BadInputError(f"method {method!r} is not among the methods checked, {self.methods}.")
        if metric not in METRICS:
            raise BadInputError(f"metric={metric!r} is not among {', '.join(METRICS)}.")
        return self.scores[method][metric][1:].mean(dim=0)

    def figure(self, metrics: Sequence[str] = METRICS) -> NotebookFigure:
        """One panel per metric: mean +- std similarity over the inputs against the layers randomised."""
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise BadInputError(f"metrics {unknown or '(none)'} are not among {', '.join(METRICS)}.")
        figure = new_figure(max(4.0, 0.45 * len(self.steps) + 1.5) * len(metrics), 3.8)
        axes = figure.subplots(1, len(metrics), squeeze=False)[0]
        x = list(range(len(self.steps)))
        for ax, metric in zip(axes, metrics, strict=True):
            for method in self.methods:
                values = self.scores[method][metric]
                mean, std = values.mean(dim=1).numpy(), values.std(dim=1, unbiased=False).numpy()
                (line,) = ax.plot(x, mean, marker="o", markersize=3, label=method)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.axhline(0, color="grey", linewidth=0.6)
            ax.set_xticks(x, self.steps, rotation=60, ha="right", fontsize=7)
            changed = {
                "cascading": "layers randomised (cumulative)",
                "independent": "layer randomised",
                "data": "model trained on",
            }[self.mode]
            ax.set(xlabel=changed, ylabel=_METRIC_LABELS[metric], ylim=(-1.05, 1.05))
            ax.set_title(f"{self.mode} randomisation", fontsize=9)
        axes[0].legend(fontsize=7)
        return figure

    def grid(self, index: int = 0, cmap: str | None = None, alpha: float = 0.5) -> NotebookFigure:
        """Input ``index``'s maps: one row per method, one column per step, as overlays on the input."""

        if not -len(self.inputs) <= index < len(self.inputs):
            raise BadInputError(f"index={index} is out of range for {len(self.inputs)} inputs.")
        rows, cols = len(self.methods), 1 + len(self.steps)
        figure = new_figure(1.6 * cols, 1.8 * rows)
        axes = figure.subplots(rows, cols, squeeze=False)
        image = self.inputs[index]
        for r, method in enumerate(self.methods):
            axes[r, 0].imshow(to_image_array(image))
            axes[r, 0].set_title(method, fontsize=8)
            for c, step in enumerate(self.steps, start=1):
                axes[r, c].imshow(overlay(image, self.maps[method][c - 1, index], cmap=cmap, alpha=alpha))
                if r == 0:
                    axes[r, c].set_title(step, fontsize=7)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        return figure


def randomisable_layers(model: nn.Module) -> list[str]:
    """The layers a sanity check re-initialises, output side first.

    A layer is a module with parameters of its own (``Linear``, ``Conv``, ``BatchNorm``, ...); the order is the
    reverse of ``model.named_modules()``, which for the usual sequential definition runs from the output down to
    the input.
    """
    own = [name for name, module in model.named_modules() if next(module.parameters(recurse=False), None) is not None]
    return own[::-1]


def _reinitialise(module: nn.Module, seed: int, devices: list[int]) -> None:
    # A private RNG stream: the same layer gets the same new weights in both modes, and the caller's RNG state
    # is left exactly as found.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        module.reset_parameters()  # type: ignore[operator]


def sanity_check(
    model: nn.Module,
    inputs: Tensor,
    methods: Sequence[str | MapFunction] = ("saliency", "guided_backprop", "gradcam"),
    mode: Literal["cascading", "independent"] = "cascading",
    target: TargetSpec = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> SanityCheck:
    """Model-parameter randomisation test of explanation methods (Adebayo et al. 2018).

    The layers with parameters (see :func:`randomisable_layers`) of a deep copy of ``model`` are re-initialised
    with their ``reset_parameters()``, output side first: cumulatively in ``"cascading"`` mode (step k has the
    top k layers random), or one layer at a time on a fresh copy in ``"independent"`` mode. At each step every
    method explains the same inputs and the same targets as on the trained model, and its map is compared with
    the trained model's map, per input: Spearman rank correlation of the maps and of their absolute values, SSIM
    of the maps min-max scaled to [0, 1], and the Pearson correlation of their HOG descriptors (see
    :func:`hog_similarity`). A constant map has no ranking; its correlation with a different map is counted as 0.

    Args:
        model: the trained model (left untouched: the randomisation works on copies; call ``model.eval()``).
        inputs: an image batch ``[N, C, H, W]``, H and W at least 7.
        methods: names from ``ds.methods()``, or callables ``f(model, inputs) -> [N, H, W]`` (a baseline that
            ignores the model, such as an edge detector, should stay similar at every step).
        mode: ``"cascading"`` or ``"independent"``.
        target: as in ``ds.explain``; ``None`` explains the trained model's predicted classes at every step.
        options: per-method options for ``ds.explain``, e.g. ``{"gradcam": {"layer": "features.3"}}``.
        seed: seeds the re-initialisation (layer i uses ``seed + i``); the global RNG state is not changed.

    Returns:
        A :class:`SanityCheck` with ``steps``, ``scores[method][metric]`` ``[steps, N]`` and ``maps``.
    """
    names, options = _check(model, inputs, methods, mode, options, seed)
    layers = randomisable_layers(model)
    modules = dict(model.named_modules())
    missing = [name for name in layers if not callable(getattr(modules[name], "reset_parameters", None))]
    if missing:
        raise BadInputError(
            f"layers {missing} have parameters but no reset_parameters(), so they cannot be re-initialised; "
            "give those modules a reset_parameters method."
        )
    if not layers:
        raise BadInputError("the model has no parameters to randomise.")

    x, resolved, spec = frozen_targets(model, inputs, target)
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})

    original = explain_maps(model, x, names, methods, spec, options)
    collected: dict[str, list[Tensor]] = {name: [original[name]] for name in names}
    cascade = probe.copy_without_hooks(model) if mode == "cascading" else None
    for i, layer in enumerate(layers):
        network = cascade if cascade is not None else probe.copy_without_hooks(model)
        _reinitialise(dict(network.named_modules())[layer], seed + i, devices)
        for name, heatmap in explain_maps(network, x, names, methods, spec, options, randomised=True).items():
            collected[name].append(heatmap)

    maps = {name: torch.stack(collected[name]) for name in names}
    scores = {name: _similarities(maps[name]) for name in names}
    return SanityCheck(
        mode=mode,
        methods=names,
        steps=["original", *layers],
        scores=scores,
        maps=maps,
        inputs=x.detach().float().cpu(),
        targets=resolved.classes.clone() if resolved.classes is not None else None,
    )


def frozen_targets(model: nn.Module, inputs: Tensor, target: TargetSpec) -> tuple[Tensor, Target, TargetSpec]:
    """The inputs on the model's device, the resolved target, and the target every later model must explain: the
    trained model's predicted classes when ``target`` leaves the class open, so that a randomised or retrained
    model is asked about the same classes, not about its own (changed) predictions."""
    x = inputs.detach().to(probe.model_device(model))
    resolved = Target(target, x.shape[0])
    if resolved.needs_prediction:
        with torch.no_grad(), probe.preserved(model):
            resolved.bind(probe.run(model, x))
    return x, resolved, resolved.frozen()


def explain_maps(
    network: nn.Module,
    x: Tensor,
    names: Sequence[str],
    methods: Sequence[str | MapFunction],
    target: TargetSpec,
    options: Mapping[str, Mapping[str, Any]],
    randomised: bool = False,
) -> dict[str, Tensor]:
    """Each method's heatmaps ``[N, H, W]`` (CPU float32) of ``network`` on ``x``, keyed by the method's name.

    On a ``randomised`` network a blank map is one of the outcomes the check measures, not a failure to warn about.
    """
    result = {}
    for name, method in zip(names, methods, strict=True):
        if callable(method):
            heatmap = method(network, x)
            if not isinstance(heatmap, Tensor) or tuple(heatmap.shape) != (x.shape[0], *x.shape[2:]):
                shape = tuple(heatmap.shape) if isinstance(heatmap, Tensor) else type(heatmap).__name__
                raise BadInputError(
                    f"{name} returned {shape}; a map function returns [N, H, W] = {(x.shape[0], *x.shape[2:])}."
                )
            result[name] = heatmap.detach().float().cpu()
        else:
            opts = dict(options.get(name, {}))
            layer = opts.pop("layer", None)
            with warnings.catch_warnings():
                if randomised:
                    warnings.filterwarnings("ignore", message=r".*heatmap is all zeros", category=UserWarning)
                result[name] = explain(network, x, method=method, target=target, layer=layer, **opts).heatmap
    return result


def _check(
    model: object, inputs: object, methods: object, mode: object, options: object, seed: object
) -> tuple[list[str], dict[str, Mapping[str, Any]]]:
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim != 4 or not len(inputs):
        raise BadInputError("inputs must be a non-empty floating-point image batch [N, C, H, W].")
    if min(inputs.shape[2:]) < _SSIM_WINDOW:
        raise BadInputError(f"inputs are {tuple(inputs.shape[2:])}; SSIM needs maps of at least 7x7 pixels.")
    if mode not in ("cascading", "independent"):
        raise BadInputError(f"mode={mode!r} is not 'cascading' or 'independent'.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadInputError(f"seed={seed!r} must be an int.")
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise BadInputError("methods must be a non-empty list of method names or map functions.")
    names: list[str] = []
    for method in methods:
        if isinstance(method, str):
            method_class(method)
            names.append(method)
        elif callable(method):
            names.append(getattr(method, "__name__", type(method).__name__))
        else:
            raise BadInputError(f"methods hold {method!r}; give names from ds.methods() or f(model, inputs).")
    if len(set(names)) != len(names):
        raise BadInputError(f"method names {names} repeat; give each method (or function) once.")
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise BadInputError("options must map a method name to a dict of its options.")
    for name, opts in options.items():
        if name not in names or not isinstance(opts, Mapping):
            raise BadInputError(f"options[{name!r}] must be a dict for one of the methods {names}.")
        if any(isinstance(m, str) and m == name for m in methods):
            _check_options(method_class(name), {k: v for k, v in opts.items() if k != "layer"})
    return names, dict(options)


# Similarity measures ---------------------------------------------------------------------------------------------


def _ranks(values: Tensor) -> Tensor:
    """Ranks of each row's values, ties given their average rank (as scipy.stats.rankdata)."""
    order = values.argsort(dim=1, stable=True)
    ranks = torch.empty_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        ordered = values[row, order[row]]
        _, counts = torch.unique_consecutive(ordered, return_counts=True)
        ends = counts.cumsum(0).double()
        average = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
        ranks[row, order[row]] = average.repeat_interleave(counts)
    return ranks


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b`` (``[N, ...]`` -> ``[N]``).

    A row without variation has no ranking; its correlation is 0 (1 where the two rows are equal).
    """
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    same = (a == b).all(dim=1)
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    value = (ra * rb).sum(dim=1) / denominator.clamp_min(1e-300)
    value = torch.where(denominator > 0, value, torch.zeros_like(value))
    return torch.where(same, torch.ones_like(value), value).float()


def _gaussian_filter(images: Tensor) -> Tensor:
    """scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5, mode='reflect') over the last two axes."""
    radius = int(3.5 * _SSIM_SIGMA + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    x = images[:, None]
    # scipy's 'reflect' repeats the edge pixel (numpy's 'symmetric'); torch has no such mode, so pad by hand.
    x = torch.cat([x[..., :radius, :].flip(-2), x, x[..., -radius:, :].flip(-2)], dim=-2)
    x = torch.cat([x[..., :radius].flip(-1), x, x[..., -radius:].flip(-1)], dim=-1)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


def _unit_range(maps: Tensor) -> Tensor:
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-300), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of each map ``a[i]`` with ``b[i]`` (``[N, H, W]`` -> ``[N]``), both min-max scaled to [0, 1]."""
    x, y = _unit_range(a.double()), _unit_range(b.double())
    mx, my = _gaussian_filter(x), _gaussian_filter(y)
    vx = _gaussian_filter(x * x) - mx * mx
    vy = _gaussian_filter(y * y) - my * my
    vxy = _gaussian_filter(x * y) - mx * my
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2  # data range 1
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (_SSIM_WINDOW - 1) // 2
    return s[:, pad:-pad, pad:-pad].mean(dim=(1, 2)).float()


def hog_cell_size(height: int, width: int) -> int:
    """The side of a HOG cell for ``height x width`` maps: the shorter side over 8, at least 1 pixel."""
    return max(1, min(height, width) // HOG_CELLS)


def hog(maps: Tensor) -> Tensor:
    """HOG descriptors of ``[N, H, W]`` maps, ``[N, features]``, as ``skimage.feature.hog`` computes them.

    Central-difference gradients (zero on the border), unsigned orientations in 9 bins of 20 degrees, each
    pixel voting its gradient magnitude into its bin, cells of :func:`hog_cell_size` pixels (pixels past the
    last whole cell are left out), blocks of 2 x 2 cells with stride one cell, L2-Hys normalised.
    """
    x = maps.double()
    n, height, width = x.shape
    cell = hog_cell_size(height, width)
    rows, cols = height // cell, width // cell
    if rows < HOG_BLOCK or cols < HOG_BLOCK:
        raise BadInputError(f"maps of {height}x{width} pixels are too small for HOG blocks of 2x2 cells.")
    g_row, g_col = torch.zeros_like(x), torch.zeros_like(x)
    g_row[:, 1:-1] = x[:, 2:] - x[:, :-2]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    # Bin i holds [w i, w (i + 1)); the edges are computed as skimage computes them so boundaries agree.
    edges = torch.tensor([180.0 / HOG_ORIENTATIONS * (i + 1) for i in range(HOG_ORIENTATIONS - 1)], dtype=x.dtype)
    bins = torch.bucketize(orientation, edges, right=True)
    votes = F.one_hot(bins, HOG_ORIENTATIONS).to(x.dtype) * magnitude[..., None]
    votes = votes[:, : rows * cell, : cols * cell].reshape(n, rows, cell, cols, cell, HOG_ORIENTATIONS)
    cells = votes.sum(dim=(2, 4)) / (cell * cell)  # [N, rows, cols, orientations]
    blocks = cells.unfold(1, HOG_BLOCK, 1).unfold(2, HOG_BLOCK, 1)  # [N, rows', cols', orientations, b, b]
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).reshape(n, rows - HOG_BLOCK + 1, cols - HOG_BLOCK + 1, -1)
    eps = 1e-5
    blocks = blocks / (blocks.square().sum(dim=-1, keepdim=True) + eps**2).sqrt()
    blocks = blocks.clamp(max=0.2)
    blocks = blocks / (blocks.square().sum(dim=-1, keepdim=True) + eps**2).sqrt()
    return blocks.reshape(n, -1)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``; 0 for a constant row (1 if equal)."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    same = (a == b).all(dim=1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    value = (a * b).sum(dim=1) / denominator.clamp_min(1e-300)
    value = torch.where(denominator > 0, value, torch.zeros_like(value))
    return torch.where(same, torch.ones_like(value), value).float()


def hog_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the HOG descriptors of ``a[i]`` and ``b[i]`` (``[N, H, W]`` -> ``[N]``).

    Adebayo et al.'s measure of whether two maps show the same edges and shapes, whatever their values; the maps
    are min-max scaled to [0, 1] first, as for SSIM.
    """
    return pearson(hog(_unit_range(a.double())), hog(_unit_range(b.double())))


def _similarities(maps: Tensor) -> dict[str, Tensor]:
    """``[steps, N, H, W]`` -> each metric's ``[steps, N]`` similarity to step 0."""
    original = maps[0]
    result: dict[str, list[Tensor]] = {metric: [] for metric in METRICS}
    for step in maps:
        result["spearman"].append(spearman(original, step))
        result["spearman_abs"].append(spearman(original.abs(), step.abs()))
        result["ssim"].append(ssim(original, step))
        result["hog"].append(hog_similarity(original, step))
    return {metric: torch.stack(values) for metric, values in result.items()}
