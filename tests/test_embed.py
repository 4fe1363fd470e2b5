"""Embeddings: layer features against a manual forward, neighbours against brute force, projections on digits."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import hooks_left, tiny_cnn
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from torch.utils.data import DataLoader, TensorDataset

from deepscope.embed import Features, knn_accuracy, neighbors, project
from deepscope.embed import embed as embed_layer
from deepscope.embed.images import grid_image
from deepscope.errors import BadInputError, LayerNotFoundError
from deepscope.store import Reader
from deepscope.track import Run

# Few iterations and one thread keep t-SNE at a few seconds; digits still separates well beyond the thresholds.
FAST_TSNE = {"early_exaggeration_iter": 100, "n_iter": 150, "n_jobs": 1}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, np.ndarray]:
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32), data.target


# embed ---------------------------------------------------------------------------------------------------------


def _conv3_output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyCNN's forward up to conv3, written out."""
    with torch.no_grad():
        hidden = model.pool(torch.relu(model.conv2(torch.relu(model.conv1(x)))))
        return model.conv3(hidden)


@pytest.mark.parametrize(
    ("pool", "reduce"),
    [("avg", lambda a: a.mean(dim=(2, 3))), ("max", lambda a: a.amax(dim=(2, 3))), ("flatten", lambda a: a.flatten(1))],
)
def test_embed_equals_manual_forward(pool: str, reduce) -> None:  # type: ignore[no-untyped-def]
    model = tiny_cnn("inplace")  # conv3 is followed by an in-place ReLU: the features must be taken before it
    torch.manual_seed(0)
    x, y = torch.randn(23, 3, 16, 16), torch.randint(0, 5, (23,))
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    result = embed_layer(model, loader, "conv3", pool=pool, progress=False)
    torch.testing.assert_close(result.features, reduce(_conv3_output(model, x)), rtol=1e-5, atol=1e-5)
    assert torch.equal(result.labels, y)
    with torch.no_grad():
        assert torch.equal(result.predictions, model(x).argmax(1))
    assert result.thumbnails is not None and result.thumbnails.shape == (23, 16, 16, 3)
    assert result.thumbnails.dtype == np.uint8 and result.thumbnails.min() == 0 and result.thumbnails.max() == 255
    assert hooks_left(model) == 0 and not model.training


def test_embed_tensor_max_items_and_thumbnail_size() -> None:
    model = tiny_cnn()
    x = torch.randn(50, 3, 64, 48)
    result = embed_layer(model, x, "gap", progress=False, max_items=13, batch_size=4)
    torch.testing.assert_close(result.features, embed_layer(model, x[:13], "gap", progress=False).features)
    assert len(result) == 13 and result.labels is None and result.features.shape == (13, 16)
    assert result.thumbnails.shape == (13, 32, 24, 3)  # longer side 32, aspect kept


def test_embed_resnet18_layer() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(4, 3, 64, 64)
    pooled = embed_layer(model, x, "layer4", pool="avg", progress=False, batch_size=2)
    head = embed_layer(model, x, "avgpool", pool="flatten", progress=False)  # the fc's input: layer4 averaged
    assert pooled.features.shape == (4, 512)
    torch.testing.assert_close(pooled.features, head.features, rtol=1e-4, atol=1e-5)
    assert hooks_left(model) == 0


def test_features_record_logs_into_a_run(tmp_path: Path) -> None:
    model = tiny_cnn()
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    result = embed_layer(model, [(x[:3], y[:3]), (x[3:], y[3:])], "relu3", progress=False)
    with Run(tmp_path / "run") as run:
        run.log_records([result.to_record("test/embedding", step=2)])
    with Reader(tmp_path / "run") as reader:
        (record,) = reader.records("test/embedding")
    np.testing.assert_allclose(record.features, result.features.numpy())
    assert record.label_header == ["label", "prediction"]
    assert [row[0] for row in record.labels] == [str(int(v)) for v in y]
    assert record.thumbnails.shape == (6, 8, 8, 3)


# neighbors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbors_equal_brute_force(metric: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 12))
    reference = NearestNeighbors(n_neighbors=6, metric=metric, algorithm="brute").fit(data)
    # Rows of the set: each is left out of its own neighbours.
    rows = [0, 17, 299]
    found = neighbors(torch.from_numpy(data), rows, k=5, metric=metric)
    distance, index = reference.kneighbors(data[rows], n_neighbors=6)
    assert torch.equal(found.indices, torch.from_numpy(index[:, 1:]))
    np.testing.assert_allclose(found.distances.numpy(), distance[:, 1:], atol=1e-9)
    # Vectors from elsewhere: nothing is left out.
    queries = rng.normal(size=(4, 12))
    found = neighbors(data, torch.from_numpy(queries), k=6, metric=metric)
    distance, index = reference.kneighbors(queries)
    assert torch.equal(found.indices, torch.from_numpy(index))
    np.testing.assert_allclose(found.distances.numpy(), distance, atol=1e-9)


def test_retrieval_figure_shows_query_then_neighbours() -> None:
    thumbs = np.arange(20, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    features = Features(torch.arange(20.0)[:, None].repeat(1, 2), labels=torch.arange(20) % 3, thumbnails=thumbs)
    found = neighbors(features, [5, 10], k=3, metric="euclidean")
    assert found.indices[0].tolist() in ([4, 6, 3], [6, 4, 3], [4, 6, 7], [6, 4, 7])
    figure = found.figure()
    assert len(figure.axes) == 2 * 4
    assert figure.axes[0].get_title() == "query: 2"  # row 5, label 5 % 3
    assert found._repr_png_().startswith(b"\x89PNG")


# project -------------------------------------------------------------------------------------------------------


def test_tsne_digits_2d_keeps_neighbourhoods(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits[0][:1000], digits[1][:1000]  # half the time of all 1,797, the same trustworthiness (0.99)
    result = project(x, "tsne", labels=y, progress=False, **FAST_TSNE)
    assert result.points.shape == (1000, 2)
    assert result.trustworthiness >= 0.95
    assert result.knn_accuracy >= 0.95
    texts = [text.get_text() for text in result.figure().findobj(lambda artist: hasattr(artist, "get_text"))]
    assert any("distances between clusters are not meaningful" in text for text in texts)


def test_tsne_3d_uses_barnes_hut(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    result = project(x[:500], "tsne", dim=3, labels=y[:500], progress=False, **FAST_TSNE)
    assert result.points.shape == (500, 3) and result.params["negative_gradient_method"] == "bh"
    assert result.trustworthiness >= 0.9 and result.knn_accuracy >= 0.9
    assert result._repr_png_().startswith(b"\x89PNG")


def test_several_perplexities_side_by_side(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    results = project(x[:300], "tsne", labels=y[:300], perplexity=[5, 30], progress=False, **FAST_TSNE)
    assert [r.params["perplexity"] for r in results] == [5, 30]
    assert not torch.allclose(results[0].points, results[1].points)
    assert len(results.figure().axes) >= 2


@pytest.mark.parametrize("dim", [2, 3])
def test_pca_equals_sklearn_up_to_sign(digits, dim: int) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    ours = project(x, "pca", dim=dim, quality=False).points.double().numpy()
    reference = PCA(n_components=dim).fit(x.double().numpy())
    theirs = reference.transform(x.double().numpy())
    signs = np.sign((ours * theirs).sum(axis=0))
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-3)
    ratio = project(x, "pca", dim=dim, quality=False).params["explained_variance_ratio"]
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-5)


def test_pca_of_fewer_points_than_features_equals_sklearn_up_to_sign() -> None:
    # 30 points of 2,000 features (a conv layer's map, flattened): the axes come from the 30 x 30 Gram matrix.
    generator = torch.Generator().manual_seed(0)
    x = (
        torch.randn(30, 5, generator=generator)
        * torch.tensor([5.0, 4, 3, 2, 1])
        @ torch.randn(5, 2000, generator=generator)
    )
    x = x + 0.1 * torch.randn(30, 2000, generator=generator)
    ours = project(x, "pca", dim=3, quality=False)
    reference = PCA(n_components=3).fit(x.double().numpy())
    theirs = reference.transform(x.double().numpy())
    signs = np.sign((ours.points.double().numpy() * theirs).sum(axis=0))
    np.testing.assert_allclose(ours.points.double().numpy(), theirs * signs, atol=1e-3)
    np.testing.assert_allclose(ours.params["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-5)
    # t-SNE's step asks for 50 axes of these 30 points: those past the 29 the centred points span carry no variance.
    reduced, info = importlib.import_module("deepscope.embed.project")._tsne_input(x, "auto", "euclidean")
    full = PCA(n_components=29).fit(x.double().numpy())
    theirs = full.transform(x.double().numpy())
    signs = np.sign((reduced[:, :29].double().numpy() * theirs).sum(axis=0))
    np.testing.assert_allclose(reduced[:, :29].double().numpy(), theirs * signs, atol=1e-3)
    assert reduced.shape == (30, 50) and float(reduced[:, 29:].abs().max()) < 1e-3
    assert info == {"pca": 50, "pca_explained_variance": pytest.approx(1.0)}


def test_knn_accuracy_equals_sklearn_leave_one_out() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 2))
    labels = (points[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int) + 2 * (points[:, 1] > 0)
    classifier = KNeighborsClassifier(n_neighbors=10).fit(points, labels)
    nearest = classifier.kneighbors(return_distance=False)  # without a query: each point's neighbours but itself
    votes = np.array([np.bincount(labels[row], minlength=4).argmax() for row in nearest])
    expected = float((votes == labels).mean())
    assert knn_accuracy(torch.from_numpy(points), labels) == pytest.approx(expected)
    assert 0.5 < expected < 1.0  # the labels are noisy, so the check can tell a wrong vote


@pytest.mark.filterwarnings("ignore:the first UMAP call:RuntimeWarning")
def test_umap_runs(digits) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("umap")  # the optional extra; its first call compiles numba code (10-30 s)
    x, y = digits
    result = project(x[:200], "umap", labels=y[:200], progress=False, n_neighbors=10, n_epochs=50)
    assert result.points.shape == (200, 2) and result.knn_accuracy >= 0.85


def test_image_scatter_and_grid() -> None:
    n = 16
    side = np.arange(4.0)
    points = np.stack(np.meshgrid(side, side[::-1]), axis=2).reshape(n, 2)  # row-major from the top left
    thumbs = np.arange(n, dtype=np.uint8)[:, None, None].repeat(3, 1).repeat(3, 2) * 10
    grid = np.asarray(grid_image(points, thumbs, columns=4, gap=1))
    assert grid.shape == (15, 15, 3) and (grid[3::4] == 255).all()  # the gaps
    assert grid[::4, ::4, 0].ravel().tolist() == (np.arange(n) * 10).tolist()  # each image stays in its own cell
    projection = project(Features(torch.from_numpy(points).float(), thumbnails=thumbs), "pca", quality=False)
    assert projection.image_scatter(size=40).size == (40, 40)
    assert projection.image_scatter(snap="grid").size == (15, 15)


# bad input -----------------------------------------------------------------------------------------------------


def _nan_rows() -> torch.Tensor:
    x = torch.randn(20, 4)
    x[3, 1], x[7, 0] = float("nan"), float("inf")
    return x


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: project(torch.randn(20, 4), "tsne", perplexity=30), "lower than the number of points"),
        (lambda: project(torch.randn(20, 4), "tsne", perplexity=7), "3 x perplexity < 20"),
        (lambda: project(torch.randn(20, 4), "tsne", perplexity=[5, 30]), "perplexity=30"),
        (lambda: project(_nan_rows(), "pca"), "in 2 of 20 rows"),
        (lambda: project(torch.randn(3, 4), "pca", dim=3), "3 points cannot be projected to 3 dimensions"),
        (lambda: project(torch.randn(20, 4), "pca", labels=[0] * 19), "19 labels for 20 points"),
        (lambda: project(torch.randn(20, 4), "isomap"), "'pca', 'tsne', 'umap'"),
        (lambda: project(torch.randn(20, 4), "pca", dim=4), "2 or 3 dimensions"),
        (lambda: project(torch.randn(20, 4), "tsne", perplexty=5), "its options are: perplexity"),
        (lambda: project(torch.randn(20, 4), "umap", n_neighbors=20), "n_neighbors < 20"),
        (lambda: neighbors(torch.randn(10, 3), [0], k=10), "1 <= k <= 9"),
        (lambda: neighbors(torch.randn(10, 3), [10], k=2), "outside 0..9"),
        (lambda: neighbors(torch.randn(10, 3), torch.randn(2, 4)), "4 dimensions but the features have 3"),
        (lambda: neighbors(torch.randn(10, 3), [0], metric="manhattan"), "'cosine', 'euclidean'"),
        (lambda: neighbors(torch.randn(10, 3), [0]).figure(), "no thumbnails"),
        (lambda: embed_layer(tiny_cnn(), torch.randn(2, 3, 8, 8), "conv3", pool="mean"), "'avg', 'max', 'flatten'"),
        (lambda: embed_layer(tiny_cnn(), "images/", "conv3"), "DataLoader"),
        (lambda: embed_layer(tiny_cnn(), torch.randn(2, 5, 8, 8), "conv3", progress=False), "could not run"),
    ],
)
def test_bad_input_is_a_clear_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInputError) as error:
        call()
    assert message in str(error.value)


def test_wrong_layer_lists_close_names() -> None:
    with pytest.raises(LayerNotFoundError, match="conv3"):
        embed_layer(tiny_cnn(), torch.randn(2, 3, 8, 8), "conv_3")


def test_missing_umap_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    with pytest.raises(BadInputError, match=r"pip install deepscope\[umap\]"):
        project(torch.randn(30, 4), "umap")


def test_training_mode_is_warned_and_kept() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).train()
    with pytest.warns(UserWarning, match="training mode"):
        embed_layer(model, torch.randn(5, 4), "0", progress=False)
    assert model.training
