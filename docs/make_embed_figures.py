"""Make the pictures of docs/embeddings.md: a small CNN trained on scikit-learn's digits (shipped offline), its
features embedded, projected with t-SNE and PCA, drawn as scatter, image scatter, grid, and retrieval grid.

Run: .venv/bin/python docs/make_embed_figures.py   (about a minute on two cores)
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deepscope.embed import embed, neighbors, project
from deepscope.render import save_figure

HERE = Path(__file__).parent / "images"


def digits_cnn(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A two-layer CNN trained for a few seconds on the digits (8 x 8 images scaled to 16 x 16)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    x = nn.functional.interpolate(images, size=(16, 16), mode="nearest")
    y = torch.tensor(digits.target)
    model = digits_cnn(x, y)
    features = embed(model, DataLoader(TensorDataset(x, y), batch_size=256), layer="4", pool="avg", progress=False)
    print(f"features {tuple(features.features.shape)}, accuracy {(features.predictions == y).float().mean():.3f}")

    tsne = project(features, "tsne", seed=0, progress=False)
    save_figure(tsne.figure(), str(HERE / "embed_tsne_digits.png"))
    save_figure(project(features, "pca").figure(), str(HERE / "embed_pca_digits.png"))
    sweep = project(features, "tsne", perplexity=[5, 30, 100], seed=0, progress=False)
    save_figure(sweep.figure(), str(HERE / "embed_perplexities.png"))
    tsne.image_scatter(size=900).save(HERE / "embed_image_scatter.png")
    tsne.image_scatter(snap="grid", columns=30).save(HERE / "embed_image_grid.png")
    save_figure(neighbors(features, [0, 11, 22, 33, 44], k=8).figure(), str(HERE / "embed_retrieval.png"))
    print(f"t-SNE trustworthiness {tsne.trustworthiness:.3f}, 10-NN accuracy {tsne.knn_accuracy:.3f}")


if __name__ == "__main__":
    main()
