"""Projector: an embedding's points in 2D or 3D (stored projections, or PCA, t-SNE, UMAP computed on the server),
coloured by a label column, searched, with nearest neighbours in the original space."""

from __future__ import annotations

from .. import View, kinds_of
from .data import Projector

VIEW = View(
    name="projector",
    title="Projector",
    order=90,
    kinds=kinds_of("projector"),
    state=Projector,
    traces=("scatter3d", "scattergl"),
)
