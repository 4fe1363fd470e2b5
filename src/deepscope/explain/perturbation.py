"""Perturbation methods that need no gradient. LIME lives here; occlusion has its own module."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import BadInputError
from .base import Method, Result, defaults, register
from .gradients import input_baselines


def grid_segments(shape: tuple[int, ...], cells: int) -> Tensor:
    """Segment ids ``[*spatial]`` for a grid of ``cells`` per side (the last cells may be smaller)."""
    axes = []
    for size in shape:
        step = -(-size // min(cells, size))
        axes.append(torch.arange(size) // step)
    if len(axes) == 1:
        return axes[0]
    per_row = int(axes[1].max()) + 1
    return axes[0][:, None] * per_row + axes[1][None, :]


def slic_segments(image: Tensor, count: int) -> Tensor:
    """SLIC superpixels of one image ``[C, H, W]`` (needs scikit-image: ``pip install deepscope[lime]``)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise BadInputError(
            "segments='slic' needs scikit-image: pip install 'deepscope[lime]' (or use segments='grid')."
        ) from None
    array = image.detach().float().cpu()
    array = (array - array.min()) / (array.max() - array.min() + 1e-12)
    channel_axis = 0 if array.shape[0] in (1, 3) else None
    if channel_axis is None:
        array = array.mean(dim=0, keepdim=True)
    labels = slic(array.numpy(), n_segments=count, channel_axis=0, start_label=0)
    return torch.as_tensor(labels, dtype=torch.long)


class Segmented(Method):
    """A method that switches interpretable features (``segments``) of the inputs on and off: LIME, the Shapley
    methods, feature ablation. It reads the ``segments``, ``grid`` and ``baseline`` options.

    :meth:`perturbed_scores` evaluates the variants of every input in full batches of ``batch_size`` rows, across
    inputs (Captum evaluates one variant per forward pass by default).
    """

    needs_module = False

    def all_segments(self) -> list[Tensor]:
        """Each input's segment ids: ``[*spatial]`` for images and signals, ``[F]`` for feature vectors and for
        several inputs (packed)."""
        n = self.inputs.shape[0]
        return [self.packed_segments(i) if self.layout.packed else self.segments(i) for i in range(n)]

    def segments(self, i: int) -> Tensor:
        """Segment ids of input ``i``: ``[*spatial]`` for images/signals, ``[F]`` for feature vectors."""
        x = self.inputs
        spec = self.opts["segments"]
        spatial = tuple(x.shape[2:]) if x.ndim > 2 else tuple(x.shape[1:])
        if isinstance(spec, Tensor):
            ids = spec[i] if spec.ndim == len(spatial) + 1 else spec
            if tuple(ids.shape) != spatial or ids.is_floating_point():
                raise BadInputError(
                    f"segments must be integer ids shaped {spatial} (or {(x.shape[0], *spatial)}); got "
                    f"{tuple(spec.shape)} {spec.dtype}."
                )
            _, ids = torch.unique(ids.long().cpu(), return_inverse=True)
            return ids
        if x.ndim == 2:
            return torch.arange(x.shape[1])
        if spec == "grid":
            return grid_segments(spatial, self.count("grid"))
        if spec == "slic":
            if x.ndim != 4:
                raise BadInputError("segments='slic' needs images (N, C, H, W).")
            return slic_segments(x[i], self.count("grid") ** 2)
        raise BadInputError(f"segments={spec!r} is not 'grid', 'slic' or a tensor of segment ids.")

    def packed_segments(self, i: int) -> Tensor:
        """Segment ids ``[F]`` of input ``i`` when several inputs are packed: each model input's ids, side by side."""
        layout = self.layout
        specs = layout.each(self.opts["segments"], "segments")
        parts = layout.parts(self.inputs[i : i + 1])
        ids = [self.input_segments(i, j, spec, parts[j][0]) for j, spec in enumerate(specs)]
        # Ids given as tensors are shared across inputs (one feature may span several); the defaults come after.
        offset = max((int(t.max()) + 1 for t, spec in zip(ids, specs) if isinstance(spec, Tensor)), default=0)
        for j, spec in enumerate(specs):
            if not isinstance(spec, Tensor):
                ids[j] = ids[j] + offset
                offset = int(ids[j].max()) + 1
        _, packed = torch.unique(torch.cat([t.reshape(-1) for t in ids]), return_inverse=True)
        return packed

    def input_segments(self, i: int, j: int, spec: object, x: Tensor) -> Tensor:
        """Segment ids of model input ``j`` (``x``: its row for input ``i``), shaped like ``x``."""
        shape = tuple(x.shape)
        if isinstance(spec, Tensor):
            if spec.is_floating_point() or spec.dtype == torch.bool:
                raise BadInputError(f"segments for inputs[{j}] must be integer ids, not {spec.dtype}.")
            ids = spec
            if ids.ndim == len(shape) + 1:  # one set of ids per sample
                if ids.shape[0] not in (1, self.inputs.shape[0]):
                    raise BadInputError(
                        f"segments for inputs[{j}] have shape {tuple(spec.shape)}: a leading batch axis of "
                        f"{ids.shape[0]}, not 1 or N = {self.inputs.shape[0]}."
                    )
                ids = ids[i if ids.shape[0] > 1 else 0]
            try:
                return torch.broadcast_to(ids.long().cpu(), shape)
            except RuntimeError:
                raise BadInputError(
                    f"segments for inputs[{j}] have shape {tuple(spec.shape)}, which does not broadcast to that "
                    f"input's shape {shape} (or {(self.inputs.shape[0], *shape)} with ids per sample)."
                ) from None
        if len(shape) == 1:
            return torch.arange(shape[0])
        if spec == "grid":
            return grid_segments(shape[1:], self.count("grid")).expand(shape)
        if spec == "slic":
            if len(shape) != 3:
                raise BadInputError(f"segments='slic' needs images; inputs[{j}] has shape {shape} per sample.")
            return slic_segments(x, self.count("grid") ** 2).expand(shape)
        raise BadInputError(f"segments={spec!r} for inputs[{j}] is not 'grid', 'slic' or a tensor of segment ids.")

    def spread(self, values: list[Tensor], segments: list[Tensor]) -> Result:
        """The attribution that gives each element its segment's value (``values[i]``: one per segment of input
        ``i``), and its heatmap."""
        x = self.inputs
        attribution = torch.zeros_like(x, dtype=torch.float32)
        for i, (value, ids) in enumerate(zip(values, segments, strict=True)):
            attribution[i] = value.float().to(x.device)[ids.to(x.device)].expand_as(x[i])
        if self.layout.packed:
            parts = self.layout.parts(attribution)
            maps = tuple(part[:, 0] if self.layout.spatial(j) else None for j, part in enumerate(parts))
            return Result(attribution=attribution, heatmap=maps)
        heatmap = attribution[:, 0] if x.ndim > 2 else attribution
        return Result(attribution=attribution, heatmap=heatmap)

    def perturbed_scores(
        self, segments: list[Tensor], present: list[Tensor], baseline: Tensor, batch_size: int
    ) -> list[Tensor]:
        """The target's scores (float32, CPU) on the variants of each input ``i`` that keep the segments
        ``present[i]`` marks (``[S_i, segments]``, 1 = the input's values, 0 = the baseline's), in batches of
        ``batch_size`` rows that run across inputs."""
        x = self.inputs
        counts = torch.tensor([p.shape[0] for p in present])
        owner = torch.repeat_interleave(torch.arange(len(present)), counts)
        index = torch.cat([torch.arange(int(c)) for c in counts])
        scores = []
        batches = range(0, len(owner), batch_size)
        with torch.no_grad():
            for start in tqdm(batches, desc=self.name, disable=len(batches) < 8 or None, leave=False):
                rows, picks = owner[start : start + batch_size], index[start : start + batch_size]
                parts = []
                for i in rows.unique_consecutive().tolist():
                    keep = present[i][picks[rows == i]].to(x.device)[:, segments[i].to(x.device)]
                    keep = keep.unsqueeze(1) if x.ndim > 2 and not self.layout.packed else keep
                    parts.append(baseline[i] + keep.to(x.dtype) * (x[i] - baseline[i]))
                batch_scores, _ = self.forward(torch.cat(parts), of=rows)
                scores.append(batch_scores.float().cpu())
        return list(torch.cat(scores).split(counts.tolist()))


@register("lime")
class Lime(Segmented):
    """Ribeiro et al. 2016: fit a weighted linear model to the model's scores on random perturbations.

    The input is split into interpretable features (``segments``: a grid of ``grid`` x ``grid`` cells by default,
    SLIC superpixels, your own segment ids, or each feature of a feature vector); each sample switches a random
    half of them to the ``baseline``; samples are weighted by LIME's exponential kernel on the cosine distance to
    the unperturbed input; the ridge regression's coefficients are the attributions, spread over each segment's
    elements. The first sample is always the unperturbed input.

    With several inputs, ``segments`` is one option for all of them or a tuple with one per input: "grid" /
    "slic" (for an input with spatial axes) or a tensor of ids broadcastable to that input's shape ``(C, *spatial)``
    (with a leading batch axis for ids per sample). Ids given as tensors name the same feature across inputs
    (Captum's ``feature_mask``); the default segments (a grid for images and signals, one feature per element of a
    feature vector) are features of their own.
    """

    options = defaults(
        segments="grid",
        grid=8,
        samples=500,
        baseline=0.0,
        kernel_width=0.25,
        ridge=1.0,
        batch_size=64,
        seed=None,
    )

    def attribute(self) -> Result:
        samples, batch_size = self.count("samples", minimum=2), self.count("batch_size")
        self.clean_scores()
        x = self.inputs
        baseline = input_baselines(self.opts["baseline"], x, self.layout)
        generator = self.generator()
        segments = self.all_segments()
        present = []
        for ids in segments:
            drawn = (torch.rand(samples, int(ids.max()) + 1, generator=generator) < 0.5).float()
            drawn[0] = 1.0
            present.append(drawn)
        scores = self.perturbed_scores(segments, present, baseline, batch_size)
        return self.spread([self.fit(p, s) for p, s in zip(present, scores, strict=True)], segments)

    def fit(self, present: Tensor, scores: Tensor) -> Tensor:
        """Weighted ridge regression of ``scores`` on ``present`` (with intercept); the coefficients."""
        ones = torch.ones(present.shape[1])
        cosine = (present @ ones) / (present.norm(dim=1) * ones.norm() + 1e-12)
        distance = 1 - cosine
        width = float(self.opts["kernel_width"])
        weights = torch.sqrt(torch.exp(-(distance**2) / width**2)).double()
        design = torch.cat([present, torch.ones(present.shape[0], 1)], dim=1).double()
        weighted = design * weights[:, None]
        gram = design.T @ weighted
        penalty = float(self.opts["ridge"]) * torch.eye(design.shape[1], dtype=torch.float64)
        penalty[-1, -1] = 0.0  # the intercept is not penalised
        solution = torch.linalg.lstsq(gram + penalty, weighted.T @ scores.double()[:, None]).solution
        return solution[:-1, 0].float()
