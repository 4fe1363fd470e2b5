"""After training: the representation (features of any layer, nearest neighbours, PCA / t-SNE / UMAP).

feats = ds.embed(model, loader, layer="layer4")          # Features: features [N, D], labels, predictions
near = ds.neighbors(feats, query=[0, 1, 2], k=8)          # Neighbors: indices, distances, .figure()
view = ds.project(feats, method="tsne", perplexity=30)    # Projection: points, trustworthiness, .figure()
run.log_records([feats.to_record("test/embedding", step)])
"""

from .extract import Features, embed
from .neighbors import Neighbors, neighbors
from .project import METHODS, Projection, Projections, knn_accuracy, project

__all__ = [
    "METHODS",
    "Features",
    "Neighbors",
    "Projection",
    "Projections",
    "embed",
    "knn_accuracy",
    "neighbors",
    "project",
]
