"""The nearest neighbours of items in feature space, and Krizhevsky's retrieval figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure
from .extract import Features, as_matrix

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")
_BLOCK_DISTANCES = 2**25  # distances held at once (128 MB of float32): the number of queries per block


@dataclass
class Neighbors(FigureDisplay):
    """The ``k`` nearest items of each query, nearest first.

    Attributes:
        indices: long ``[Q, k]``, rows of the searched set.
        distances: float ``[Q, k]``; cosine distance ``1 - cos`` or euclidean distance.
        query: the queries' own rows ``[Q]`` when they were given as indices (then excluded from their
            neighbours), else ``None``.
        metric: ``"cosine"`` or ``"euclidean"``.
        labels, thumbnails: of the searched set, when known (a :class:`Features` was searched), for ``figure()``.
    """

    indices: Tensor
    distances: Tensor
    query: Tensor | None
    metric: str
    labels: Tensor | None = None
    thumbnails: np.ndarray | None = field(default=None, repr=False)

    def figure(self, classes: list[str] | None = None, max_queries: int = 10) -> NotebookFigure:
        """The retrieval grid: one row per query, the query image first, then its neighbours, with labels."""
        if self.thumbnails is None:
            raise BadInputError(
                "no thumbnails to show; search a Features from ds.embed (which keeps them), or set .thumbnails."
            )

        rows, k = min(self.indices.shape[0], max_queries), self.indices.shape[1]
        figure = new_figure(1.1 * (k + 1), 1.25 * rows)
        axes = np.asarray(figure.subplots(rows, k + 1, squeeze=False))

        def name(index: int) -> str:
            if self.labels is None:
                return f"#{index}"
            label = int(self.labels[index])
            return classes[label] if classes is not None else str(label)

        for row in range(rows):
            cells = [(None if self.query is None else int(self.query[row]), True)]
            cells += [(int(i), False) for i in self.indices[row]]
            for col, (index, is_query) in enumerate(cells):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if index is not None:
                    image = self.thumbnails[index]
                    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
                    ax.set_title(("query: " if is_query else "") + name(index), fontsize=8)
                else:
                    ax.set_title("query", fontsize=8)
                if is_query:
                    for spine in ax.spines.values():
                        spine.set_edgecolor("tab:red")
                        spine.set_linewidth(2)
        figure.suptitle(f"{k} nearest neighbours ({self.metric} distance in feature space)", fontsize=9)
        return figure


def _queries(query: object, data: Tensor, what: str = "query") -> tuple[Tensor, Tensor | None]:
    """The query vectors ``[Q, D]`` and, when the queries are rows of the set, their indices."""
    n, d = data.shape
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        query = [int(query)]
    if isinstance(query, (list, tuple)) and all(isinstance(q, (int, np.integer)) for q in query):
        query = torch.tensor([int(q) for q in query], dtype=torch.long)
    if isinstance(query, np.ndarray):
        query = torch.from_numpy(query)
    if isinstance(query, Features):
        query = query.features
    if not isinstance(query, Tensor):
        raise BadInputError(f"{what} must be row indices or feature vectors [Q, D], not {type(query).__name__}.")
    if not query.is_floating_point():
        indices = query.reshape(-1).long()
        if indices.numel() == 0:
            raise BadInputError(f"{what} is empty; pass at least one row index.")
        if indices.min() < -n or indices.max() >= n:
            raise BadInputError(f"{what} holds row indices outside 0..{n - 1}.")
        indices = indices % n
        return data[indices], indices
    vectors = as_matrix(query[None] if query.ndim == 1 else query, what)
    if vectors.shape[1] != d:
        raise BadInputError(f"{what} vectors have {vectors.shape[1]} dimensions but the features have {d}.")
    return vectors.to(data.dtype), None


def nearest(
    queries: Tensor, data: Tensor, k: int, metric: str = "euclidean", own: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest rows of ``data`` to each query by brute force, nearest first: ``(distances, indices)``,
    both ``[Q, k]`` (cosine: ``1 - cos``; euclidean). ``own[i]``, a row of ``data``, is left out of query ``i``'s
    neighbours (a point is not its own neighbour). Queries go in blocks that bound the distances held at once.

    Euclidean neighbours are ranked by |q|^2 - 2 q.d + |d|^2 (one matrix product a block) and only the chosen
    distances take a square root.
    """
    block = max(1, _BLOCK_DISTANCES // max(1, data.shape[0]))
    if metric == "cosine":
        unit_data = torch.nn.functional.normalize(data, dim=1)
    else:
        squared = (data * data).sum(dim=1)
    found_distances, found_indices = [], []
    for start in range(0, queries.shape[0], block):
        rows = queries[start : start + block]
        if metric == "cosine":
            scores = 1 - torch.nn.functional.normalize(rows, dim=1) @ unit_data.T
        else:
            scores = torch.addmm(squared[None], rows, data.T, alpha=-2.0)
            scores += (rows * rows).sum(dim=1, keepdim=True)
        if own is not None:
            scores[torch.arange(len(rows)), own[start : start + block]] = float("inf")
        values, indices = scores.topk(k, dim=1, largest=False)
        values = values.clamp(min=0)
        found_distances.append(values if metric == "cosine" else values.sqrt())
        found_indices.append(indices)
    return torch.cat(found_distances), torch.cat(found_indices)


def neighbors(features: object, query: object, k: int = 5, metric: Metric = "cosine") -> Neighbors:
    """The ``k`` nearest items to each query in feature space, by brute force in blocks of queries.

    Args:
        features: a :class:`Features` (from :func:`embed`; its labels and thumbnails make ``figure()`` work), or a
            tensor / array ``[N, D]``.
        query: row indices into ``features`` (an int, a list, a long tensor): each row is left out of its own
            neighbours; or feature vectors ``[D]`` / ``[Q, D]`` from elsewhere.
        k: neighbours per query.
        metric: ``"cosine"`` (``1 - cos``, the usual choice for ReLU features) or ``"euclidean"``.

    Returns:
        :class:`Neighbors` with ``indices`` and ``distances`` ``[Q, k]``, nearest first.
    """
    data = as_matrix(features)
    if metric not in METRICS:
        raise BadInputError(f"metric={metric!r} is not one of {', '.join(map(repr, METRICS))}.")
    vectors, rows = _queries(query, data)
    available = data.shape[0] - (1 if rows is not None else 0)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= available:
        raise BadInputError(f"k={k}; pass 1 <= k <= {available} (the items a query can have as neighbours).")
    found_distances, found_indices = nearest(vectors, data, k, metric, own=rows)
    labels = features.labels if isinstance(features, Features) else None
    thumbs = features.thumbnails if isinstance(features, Features) else None
    return Neighbors(found_indices, found_distances, rows, metric, labels, thumbs)
