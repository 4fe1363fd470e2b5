"""Multifaceted feature visualisation (Nguyen, Yosinski & Clune 2016): one image per kind of input a unit likes.

A unit often responds to several different things (a "grocery store" neuron fires for fruit stalls and for shop
fronts); one maximisation from noise shows at most one of them, or a blend. The recipe: take the unit's top-k
activating inputs, describe each by a layer's activations, embed them with t-SNE, cluster the embedding with
k-means, and start one maximisation from the mean of the N inputs closest to each cluster's centroid (the paper's
N = 15), with a centre bias so each facet forms in the middle of the image. The unit may be a channel of a feature
map or a neuron of a vector layer, such as a classifier's class output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure, to_image_array
from .maximize import Maximization, maximize
from .objectives import channel, forward_until
from .patches import top_patches


@dataclass
class Facets(FigureDisplay):
    """What :func:`multifaceted` found: one facet per cluster of the unit's top inputs.

    Attributes:
        layer, unit: the unit visualised (channel ``unit`` of ``layer``).
        indices: ``[k]`` the data positions of the unit's top-k inputs, strongest first.
        activations: ``[k]`` the unit's response to each (its feature map's maximum; a vector layer's value).
        points: ``[k, 2]`` their t-SNE embedding.
        assignments: ``[k]`` the facet (cluster) of each.
        centroids: ``[F, 2]`` each facet's k-means centroid in the t-SNE map.
        starts: ``[F, C, H, W]`` the mean of each facet's inputs closest to its centroid: where its maximisation
            started.
        averaged: per facet, the data positions of the inputs averaged into its start, nearest the centroid first.
        images: ``[F, C, H, W]`` in [0, 1]: each facet's maximised image.
        maximization: the :class:`Maximization` behind ``images`` (history, scores, recipe).
    """

    layer: str
    unit: int
    indices: Tensor
    activations: Tensor
    points: Tensor
    assignments: Tensor
    centroids: Tensor
    starts: Tensor
    averaged: list[Tensor]
    images: Tensor
    maximization: Maximization

    def members(self, facet: int) -> Tensor:
        """The data positions of the top inputs in cluster ``facet``, strongest first."""
        if not 0 <= facet < len(self.starts):
            raise BadInputError(
                f"facet {facet} does not exist; there are {len(self.starts)} (0 to {len(self.starts) - 1})."
            )
        return self.indices[self.assignments == facet]

    def figure(self) -> NotebookFigure:
        """The t-SNE map of the top inputs coloured by facet, then each facet's start (mean input) and final image."""

        count = len(self.starts)
        columns = max(count, 2)
        figure = new_figure(1.7 * columns + 3.2, 3.6)
        left, right = figure.subfigures(1, 2, width_ratios=[3.2, 1.7 * columns])
        ax = left.subplots()
        colours = [f"C{facet % 10}" for facet in self.assignments.tolist()]
        ax.scatter(self.points[:, 0], self.points[:, 1], c=colours, s=12)
        ax.set_title(f"top {len(self.indices)} inputs, t-SNE", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        axes = right.subplots(2, columns, squeeze=False)
        for facet in range(columns):
            for row, (pictures, caption) in enumerate(((self.starts, "mean of {n}"), (self.images, "score {s:.3g}"))):
                axis = axes[row, facet]
                axis.set_axis_off()
                if facet < count:
                    axis.imshow(to_image_array(pictures[facet].clamp(0, 1)), vmin=0, vmax=1, interpolation="nearest")
                    n = len(self.averaged[facet])
                    score = float(self.maximization.scores[facet])
                    axis.set_title(f"facet {facet}: " + caption.format(n=n, s=score), fontsize=7, color=f"C{facet}")
        figure.suptitle(f"{self.layer}, unit {self.unit}: {count} facets", fontsize=10)
        return figure


def multifaceted(
    model: nn.Module,
    data: Iterable[Any] | Tensor,
    layer: str,
    unit: int,
    facets: int = 4,
    k: int = 64,
    *,
    closest: int | None = 15,
    features: str | None = None,
    steps: int = 256,
    perplexity: float | None = None,
    centre_bias: bool | float = True,
    progress: bool | None = None,
    seed: int = 0,
    batch_size: int = 64,
    **options: Any,
) -> Facets:
    """One maximised image per facet of channel ``unit`` of ``layer``: per cluster of its top-activating inputs.

    Args:
        model: the network (call ``model.eval()`` first), on its own device.
        data: a DataLoader (or iterable) of ``inputs`` or ``(inputs, labels, ...)`` batches, or a tensor
            ``[N, C, H, W]``, of images in [0, 1] that the model takes as they are (the facets start from their
            means; a model trained on normalised inputs gets its normalisation as a first layer).
        layer: a layer with a 2-D feature map and ``unit`` one of its channels, or a vector layer (a Linear layer,
            the class scores) and ``unit`` one of its neurons (a class output: Nguyen et al.'s case).
        facets: how many clusters (and images).
        k: how many top inputs to cluster (the unit's response is its feature map's maximum, as in
            :func:`~deepscope.features.top_patches`); more than ``facets``, and at least 4 for t-SNE.
        closest: each facet starts from the mean of this many of its inputs, those closest to its k-means centroid
            in the t-SNE map (Nguyen et al. average 15); a smaller cluster gives all it has; ``None``: all of them.
        features: the layer whose activations (flattened) describe each input for the clustering; default
            ``layer`` itself (all its channels: how that layer sees the input). Nguyen et al., visualising output
            units, used the penultimate layer: pass its name.
        steps: maximisation steps.
        perplexity: t-SNE's perplexity; default ``min(30, (k - 1) / 3)``, so small ``k`` works.
        centre_bias: the maximisation's centre bias (see :class:`~deepscope.features.maximize.Recipe`).
        progress: show tqdm bars; ``None`` shows them on a terminal only.
        seed: seeds t-SNE, k-means and the maximisation.
        batch_size: the batch size when ``data`` is a tensor.
        **options: passed on to :func:`~deepscope.features.maximize` (``preset=``, ``lr=``, ``transforms=``...);
            ``start`` and ``batch`` are the facets'.

    Returns:
        :class:`Facets`: ``starts``, ``images``, ``members(facet)``, the t-SNE ``points``, ``figure()``.
    """
    if isinstance(facets, bool) or not isinstance(facets, int) or facets < 1:
        raise BadInputError(f"facets={facets!r}; give a positive number of clusters.")
    if isinstance(k, bool) or not isinstance(k, int) or k < max(4, facets + 1):
        raise BadInputError(f"k={k!r}; cluster more top inputs than facets, and at least 4 (e.g. k = 16 x facets).")
    if closest is not None and (isinstance(closest, bool) or not isinstance(closest, int) or closest < 1):
        raise BadInputError(f"closest={closest!r}; give how many inputs near each centroid to average (15), or None.")
    taken = sorted({"start", "batch", "preprocess", "generator", "latent", "latent_shape"} & set(options))
    if taken:
        raise BadInputError(
            f"{', '.join(taken)} can't be set: each facet starts from its cluster's mean input, which the model "
            "takes as it is."
        )
    described = layer if features is None else features
    probe.named_layer(model, described)  # an unknown name fails now, with close names, before the data pass

    top = top_patches(model, data, layer, units=unit, k=k, progress=progress, batch_size=batch_size)
    indices, activations = top.indices[0], top.values[0]
    if len(indices) < max(4, facets + 1):
        raise BadInputError(f"the data holds only {len(indices)} inputs; {facets} facets need more than {facets}.")
    inputs = torch.stack([top.images[int(i)] for i in indices]).float()
    if inputs.min() < 0 or inputs.max() > 1:
        raise BadInputError(
            "multifaceted starts maximisations from mean inputs, so the data must be images in [0, 1]: put the "
            "model's normalisation inside it (nn.Sequential(normalize, model))."
        )
    described_inputs = _features(model, inputs, described, batch_size)

    from sklearn.cluster import KMeans

    from ..embed import project

    perplexity = min(30.0, (len(inputs) - 1) / 3) if perplexity is None else perplexity
    points = project(described_inputs, "tsne", seed=seed, progress=progress, quality=False, perplexity=perplexity)
    kmeans = KMeans(n_clusters=facets, n_init=10, random_state=seed).fit(points.points.numpy())
    clusters = torch.as_tensor(kmeans.labels_, dtype=torch.long)
    # facets ordered by their strongest member, so facet 0 holds the unit's top input
    order = list(dict.fromkeys(clusters.tolist()))
    assignments = torch.as_tensor([order.index(c) for c in clusters.tolist()], dtype=torch.long)
    centroids = torch.as_tensor(kmeans.cluster_centers_[order], dtype=points.points.dtype)
    nearest = [_nearest_members(points.points, assignments, centroids, facet, closest) for facet in range(facets)]
    starts = torch.stack([inputs[rows].mean(0) for rows in nearest])

    result = maximize(
        model, channel(layer, [unit] * facets), steps, start=starts, centre_bias=centre_bias, progress=progress,
        seed=seed, **options,
    )  # fmt: skip
    return Facets(
        layer=layer,
        unit=unit,
        indices=indices,
        activations=activations,
        points=points.points,
        assignments=assignments,
        centroids=centroids,
        starts=starts,
        averaged=[indices[rows] for rows in nearest],
        images=result.images,
        maximization=result,
    )


def _nearest_members(points: Tensor, assignments: Tensor, centroids: Tensor, facet: int, count: int | None) -> Tensor:
    """The rows of facet ``facet``'s members, nearest its centroid first, at most ``count`` of them."""
    rows = torch.nonzero(assignments == facet).flatten()
    distances = (points[rows] - centroids[facet]).norm(dim=1)
    nearest = rows[torch.argsort(distances, stable=True)]
    return nearest if count is None else nearest[:count]


def _features(model: nn.Module, inputs: Tensor, layer: str, batch_size: int) -> Tensor:
    """``[N, D]``: each input's activations at ``layer``, flattened (the forward pass stops there)."""
    device = probe.model_device(model)
    rows = []
    with torch.no_grad():
        for first in range(0, len(inputs), batch_size):
            batch = inputs[first : first + batch_size].to(device)
            rows.append(forward_until(model, batch, frozenset({layer}))[layer].flatten(1).float().cpu())
    described = torch.cat(rows)
    if not math.isfinite(float(described.abs().sum())):
        raise BadInputError(f"layer {layer!r} gave non-finite activations for the top inputs; check the model.")
    return described
