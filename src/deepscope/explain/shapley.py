"""Shapley values and feature ablation on interpretable features (segments), Captum's perturbation families.

Each method switches segments of the input (a grid of image cells, SLIC superpixels, your own ids, or the features
of a vector, as LIME's ``segments``) between the input's values and the ``baseline``'s, and evaluates every variant
of every input in full batches of ``batch_size`` rows (:meth:`Segmented.perturbed_scores`). The attribution of a
segment is spread over its elements, as Captum does with a ``feature_mask``.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

from .base import Result, defaults, register
from .gradients import input_baselines
from .perturbation import Segmented


def coalition_sizes_weights(features: int) -> Tensor:
    """The Shapley kernel's probability of each coalition size ``1..M-1``, proportional to ``(M-1)/(k(M-k))``."""
    k = torch.arange(1, features, dtype=torch.float64)
    weights = (features - 1) / (k * (features - k))
    return weights / weights.sum()


def all_coalitions(features: int) -> tuple[Tensor, Tensor]:
    """Every coalition but the empty and the full one ``[2^M - 2, M]``, with the Shapley kernel's weights."""
    rows, weights = [], []
    for size in range(1, features):
        weight = (features - 1) / (math.comb(features, size) * size * (features - size))
        for chosen in combinations(range(features), size):
            row = torch.zeros(features)
            row[list(chosen)] = 1.0
            rows.append(row)
            weights.append(weight)
    return torch.stack(rows), torch.tensor(weights, dtype=torch.float64)


def sampled_coalitions(features: int, samples: int, generator: torch.Generator) -> Tensor:
    """``samples`` coalitions drawn from the Shapley kernel (a size by :func:`coalition_sizes_weights`, then a
    uniform subset of that size), in pairs with their complements (antithetic sampling)."""
    pairs = -(-samples // 2)
    sizes = torch.multinomial(coalition_sizes_weights(features).float(), pairs, replacement=True, generator=generator)
    sizes = sizes + 1
    order = torch.rand(pairs, features, generator=generator).argsort(dim=1)
    chosen = (order < sizes[:, None]).float()
    return torch.cat([chosen, 1 - chosen])[: max(samples, 1)]


def constrained_fit(present: Tensor, values: Tensor, weights: Tensor, total: float) -> Tensor:
    """The weighted least-squares coefficients of ``values`` on ``present`` whose sum is ``total`` (SHAP's
    efficiency, enforced exactly by eliminating the last coefficient)."""
    features = present.shape[1]
    if features == 1:
        return torch.tensor([total], dtype=torch.float64)
    z = present.double()
    design = z[:, :-1] - z[:, -1:]
    target = values.double() - z[:, -1] * total
    root = weights.double().sqrt()[:, None]
    solution = torch.linalg.lstsq(design * root, target[:, None] * root).solution[:, 0]
    return torch.cat([solution, (total - solution.sum()).reshape(1)])


@register("kernel_shap")
class KernelShap(Segmented):
    """Lundberg & Lee 2017 (Captum's ``KernelShap``): Shapley values of the segments by a weighted linear
    regression on coalitions (segments switched to the ``baseline``).

    With ``M`` segments, when ``samples`` covers all ``2^M - 2`` coalitions they are all evaluated with the
    Shapley kernel's weights and the result is the exact Shapley values; otherwise ``samples`` coalitions are drawn
    from the kernel (each with its complement). The regression is constrained so that the attributions sum to
    f(x) - f(baseline) (efficiency) exactly. ``segments`` as LIME's (default: an 8 x 8 grid; each feature of a
    feature vector; with several inputs, one per input or ids shared across inputs). Heatmap: the attribution of
    the first channel (each segment spans the channels).
    """

    options = defaults(segments="grid", grid=8, samples=500, baseline=0.0, batch_size=64, seed=None)

    def attribute(self) -> Result:
        samples, batch_size = self.count("samples", minimum=2), self.count("batch_size")
        clean = self.clean_scores().float().cpu()
        x = self.inputs
        baseline = input_baselines(self.opts["baseline"], x, self.layout)
        generator = self.generator()
        segments = self.all_segments()
        present, weights = [], []
        for ids in segments:
            features = int(ids.max()) + 1
            if features >= 2 and 2**features - 2 <= samples:
                rows, weight = all_coalitions(features)
            else:
                rows = sampled_coalitions(features, samples, generator) if features >= 2 else torch.zeros(0, 1)
                weight = torch.ones(rows.shape[0], dtype=torch.float64)
            present.append(torch.cat([torch.zeros(1, features), rows]))  # the baseline first
            weights.append(weight)
        scores = self.perturbed_scores(segments, present, baseline, batch_size)
        values = []
        for i, (rows, score, weight) in enumerate(zip(present, scores, weights, strict=True)):
            empty = score[0].double()
            total = float(clean[i].double() - empty)
            values.append(constrained_fit(rows[1:], score[1:].double() - empty, weight, total))
        return self.spread(values, segments)


@register("shapley_sampling")
class ShapleySampling(Segmented):
    """Castro et al. 2009 (Captum's ``ShapleyValueSampling``): Shapley values of the segments by sampling
    ``samples`` random orders; along each order the segments are switched from the ``baseline`` to the input one
    by one, and each is credited with the change of the score it makes. Every order's credits sum to f(x) -
    f(baseline), so the attributions do too (efficiency). Inputs with the same number of segments share the orders
    (as Captum's batch does), drawn with ``torch.randperm`` from the ``seed``: the same orders Captum draws after
    ``torch.manual_seed(seed)``. ``segments`` as LIME's. Each order costs one forward pass per segment.
    """

    options = defaults(segments="grid", grid=8, samples=25, baseline=0.0, batch_size=64, seed=None)

    def attribute(self) -> Result:
        samples, batch_size = self.count("samples"), self.count("batch_size")
        clean = self.clean_scores().float().cpu()
        x = self.inputs
        baseline = input_baselines(self.opts["baseline"], x, self.layout)
        generator = self.generator()
        segments = self.all_segments()
        orders: dict[int, Tensor] = {}
        present = []
        for ids in segments:
            features = int(ids.max()) + 1
            if features not in orders:
                orders[features] = torch.stack([torch.randperm(features, generator=generator) for _ in range(samples)])
            order = orders[features]
            # Row t of an order: its first t segments present (t = 0..M-1; all M present is the clean input).
            rank = order.argsort(dim=1)  # where each segment comes in its order
            steps = torch.arange(features)
            rows = (rank[:, None, :] < steps[None, :, None]).float().reshape(-1, features)
            present.append(rows)
        scores = self.perturbed_scores(segments, present, baseline, batch_size)
        values = []
        for i, (ids, score) in enumerate(zip(segments, scores, strict=True)):
            features = int(ids.max()) + 1
            order = orders[features]
            path = torch.cat([score.double().reshape(samples, features), clean[i].double().expand(samples, 1)], 1)
            gains = path[:, 1:] - path[:, :-1]  # the gain of the segment added at each step
            credit = torch.zeros(samples, features, dtype=torch.float64).scatter_(1, order, gains)
            values.append(credit.mean(dim=0))
        return self.spread(values, segments)


@register("feature_ablation")
class FeatureAblation(Segmented):
    """Captum's ``FeatureAblation``: each segment's attribution is the drop of the score when that segment alone
    is switched to the ``baseline``, f(x) - f(x without it), given to every element of the segment. ``segments``
    as LIME's. One forward pass per segment, batched.
    """

    options = defaults(segments="grid", grid=8, baseline=0.0, batch_size=64)

    def attribute(self) -> Result:
        batch_size = self.count("batch_size")
        clean = self.clean_scores().float().cpu()
        x = self.inputs
        baseline = input_baselines(self.opts["baseline"], x, self.layout)
        segments = self.all_segments()
        present = [1 - torch.eye(int(ids.max()) + 1) for ids in segments]
        scores = self.perturbed_scores(segments, present, baseline, batch_size)
        return self.spread([clean[i] - score for i, score in enumerate(scores)], segments)
