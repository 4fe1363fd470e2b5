"""t-SNE's steps in torch (embed/tsne.py): exact neighbours against brute force, the interpolated repulsion against
the exact O(N^2) sums, the whole gradient against openTSNE's own, and project()'s options around them."""

from __future__ import annotations

import importlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from openTSNE import TSNE, affinity, nearest_neighbors
from openTSNE.tsne import kl_divergence_fft
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from deepscope import project
from deepscope.embed import tsne
from deepscope.errors import BadInputError

project_module = importlib.import_module("deepscope.embed.project")  # the package re-exports the function


def _brute_force(x: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = torch.cdist(x.double(), x.double())
    distances.fill_diagonal_(float("inf"))
    values, indices = distances.topk(k, dim=1, largest=False)
    return indices.numpy(), values.numpy()


def _layout(n: int, extent: float, seed: int = 0) -> np.ndarray:
    """Ten clusters spread over ``extent`` units, as a t-SNE embedding looks at that scale."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-extent / 2, extent / 2, size=(10, 2))
    return np.ascontiguousarray(centres[rng.integers(0, 10, n)] + rng.normal(scale=extent / 16, size=(n, 2)))


def _exact_repulsion(y: torch.Tensor) -> tuple[torch.Tensor, float]:
    difference = y[:, None, :] - y[None, :, :]
    q = 1 / (1 + (difference**2).sum(-1))
    q.fill_diagonal_(0)
    return ((q**2)[..., None] * difference).sum(1), float(q.sum())


# The first 1,000 of the 1,797 digits: t-SNE's tests run in about half the time, with the same margins (the
# gradient-driven runs reach a trustworthiness of 0.99 either way).
DIGITS = 1000


@pytest.fixture(scope="module")
def digit_affinities() -> tuple[np.ndarray, np.ndarray, object]:
    data = load_digits()
    x, labels = data.data[:DIGITS].astype(np.float32), data.target[:DIGITS]
    indices, distances = tsne.exact_neighbors(torch.from_numpy(x), 90)
    P = affinity.PerplexityBasedNN(
        knn_index=nearest_neighbors.PrecomputedNeighbors(indices, distances), perplexity=30, n_jobs=1
    ).P
    return x, labels, P


# 6,000 points take two blocks of the search; the offset of 1e4 would ruin a float32 |a|^2 - 2ab + |b|^2 that did
# not centre the data first.
@pytest.mark.parametrize("n, offset", [(500, 0.0), (6000, 0.0), (500, 1e4)], ids=["one-block", "two-blocks", "offset"])
def test_exact_neighbors_equal_brute_force(n: int, offset: float) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=generator) + offset
    indices, distances = tsne.exact_neighbors(x, 15)
    expected_indices, expected_distances = _brute_force(x - offset, 15)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4)
    agree = (np.sort(indices, axis=1) == np.sort(expected_indices, axis=1)).mean()
    assert agree > 0.999  # ties at float32 precision may swap the last neighbour
    assert not (indices == np.arange(n)[:, None]).any()  # a point is never its own neighbour


def test_duplicate_points_are_each_others_nearest_at_distance_zero() -> None:
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    x[1] = x[0]
    indices, distances = tsne.exact_neighbors(x, 3)
    assert (indices[0, 0], indices[1, 0]) == (1, 0)
    assert distances[0, 0] == distances[1, 0] == 0


@pytest.mark.parametrize("extent", [0.5, 20.0, 90.0])
def test_repulsion_equals_the_exact_sums(extent: float) -> None:
    y = torch.from_numpy(_layout(3000, extent))
    forces, z = tsne.repulsion(y)
    exact_forces, exact_z = _exact_repulsion(y)
    assert abs(float(z) - exact_z) / exact_z < 5e-3
    error = (forces - exact_forces).norm(dim=1) / exact_forces.norm(dim=1).clamp(min=1e-12)
    # openTSNE's own interpolation, measured on the same points, errs as much: a median of ~1e-2.
    assert float(error.median()) < 0.03


def test_repulsion_in_one_dimension() -> None:
    y = torch.from_numpy(np.random.default_rng(2).normal(scale=10, size=(2000, 1)))
    forces, z = tsne.repulsion(y)
    exact_forces, exact_z = _exact_repulsion(y)
    assert abs(float(z) - exact_z) / exact_z < 5e-3
    assert float(((forces - exact_forces).abs() / exact_forces.abs().clamp(min=1e-6)).median()) < 0.03


FFT = {"n_interpolation_points": 3, "min_num_intervals": 50, "ints_in_interval": 1}  # openTSNE's defaults


def _openTSNE_gradient(digit_affinities, extent: float) -> tuple[object, np.ndarray, float, np.ndarray]:  # type: ignore[no-untyped-def]
    """The digits' affinities, a layout spread over ``extent`` units, and openTSNE's own KL and gradient there."""
    _, _, P = digit_affinities
    y = _layout(P.shape[0], extent)
    error, gradient = kl_divergence_fft(y, P, 1, FFT, should_eval_error=True, n_jobs=1)
    return P, y, error, gradient


@pytest.mark.parametrize("extent", [2.0, 60.0])
def test_compiled_gradient_side_by_side_equals_openTSNE(digit_affinities, extent: float) -> None:  # type: ignore[no-untyped-def]
    P, y, expected_error, expected = _openTSNE_gradient(digit_affinities, extent)
    # One after the other; the repulsion in a thread of its own; and that thread also taking some of the
    # attraction's rows (the share it takes follows the measured times: forced to half, then as it comes).
    balanced = tsne.Gradient("cpu", threads=2)  # kept across calls, as in an optimisation
    for threads, share in ((1, 0.0), (2, 0.0), (2, 0.5), (2, None), (2, None), (2, None)):
        objective = tsne.Gradient("cpu", threads=threads) if share is not None else balanced
        if share is not None:
            objective._worker_share = share
        error, gradient = objective(y, P, 1, FFT, should_eval_error=True)
        np.testing.assert_allclose(gradient, expected, rtol=1e-9, atol=1e-15)
        assert error == pytest.approx(expected_error, rel=1e-9)
        assert 0 <= objective._worker_share <= 0.9


@pytest.mark.parametrize("extent", [2.0, 60.0])
def test_torch_gradient_errs_no_more_than_openTSNE(digit_affinities, extent: float) -> None:  # type: ignore[no-untyped-def]
    P, y, expected_error, expected = _openTSNE_gradient(digit_affinities, extent)
    error, gradient = tsne.Gradient("cpu", backend="torch")(y, P, 1, FFT, should_eval_error=True)
    # Both interpolate: measured against the exact gradient, the torch one errs no more than openTSNE's.
    exact = np.zeros_like(y)
    tsne._openTSNE_attraction(P, y, exact, 1, False)
    forces, z = _exact_repulsion(torch.from_numpy(y))
    exact -= forces.numpy() / z
    ours, theirs = (np.linalg.norm(g - exact) / np.linalg.norm(exact) for g in (gradient, expected))
    assert ours < max(1.5 * theirs, 1e-3)
    assert error == pytest.approx(expected_error, rel=1e-3)
    # Its attraction (a gather and scatter in torch) equals openTSNE's compiled one.
    attraction, p_sum, kl_part = tsne.Gradient("cpu", backend="torch")._attraction(P, torch.from_numpy(y), True)
    reference = np.zeros_like(y)
    expected_sum, expected_kl = tsne._openTSNE_attraction(P, y, reference, 1, True)
    np.testing.assert_allclose(attraction.numpy(), reference, rtol=1e-6, atol=1e-12)
    assert (p_sum, kl_part) == pytest.approx((expected_sum, expected_kl), rel=1e-9)


@pytest.mark.parametrize("backend", ["openTSNE", "torch"])
def test_openTSNE_optimises_with_the_gradient(digit_affinities, backend: str) -> None:  # type: ignore[no-untyped-def]
    x, _, P = digit_affinities
    gradient = tsne.Gradient("cpu", threads=1, backend=backend)
    embedding = TSNE(negative_gradient_method=gradient, n_iter=100, early_exaggeration_iter=100, random_state=0).fit(
        x, affinities=affinity.PrecomputedAffinities(P)
    )
    trust = trustworthiness(x, np.asarray(embedding), n_neighbors=10)
    assert trust > 0.95


def test_project_uses_exact_neighbours_and_reports_progress(digit_affinities) -> None:  # type: ignore[no-untyped-def]
    x, labels, _ = digit_affinities
    fractions: list[float] = []
    options = {"n_iter": 150, "early_exaggeration_iter": 100, "n_jobs": 1}
    results = project(
        x[:600], "tsne", labels=labels[:600], perplexity=[10, 30], on_progress=fractions.append, **options
    )
    assert [r.params["neighbors"] for r in results] == ["exact", "exact"]
    assert all(r.trustworthiness > 0.9 for r in results)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions.count(0.5) >= 1  # the first of the two runs ends half way
    approximate = project(x[:600], "tsne", labels=labels[:600], neighbors="annoy", **options)
    assert approximate.params["neighbors"] == "annoy"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"neighbors": "kd-tree"}, "'auto', 'exact', 'annoy', 'pynndescent'"),
        ({"neighbors": "exact", "metric": "cosine"}, "pass neighbors='annoy'"),
        ({"device": "banana"}, "not a torch device"),
        ({"n_iter": "long"}, "n_iter='long'; pass a number of iterations"),
        ({"early_exaggeration_iter": -1}, "early_exaggeration_iter=-1; pass a number of iterations"),
        ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "banana"}, "device="),
    ],
    ids=["unknown-search", "exact-needs-euclidean", "bad-device", "no-gpu", "bad-n-iter", "negative-exaggeration"],
)
def test_bad_tsne_options_are_clear_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")):
        project(torch.randn(100, 5), "tsne", perplexity=5, **options)


def test_fft_sizes_are_smooth_numbers() -> None:
    assert [tsne._smooth(n) for n in (50, 97, 121, 127, 257)] == [50, 100, 125, 128, 270]


# The PCA step and the KL divergence ----------------------------------------------------------------------------

FAST = {"n_iter": 100, "early_exaggeration_iter": 100, "n_jobs": 1, "progress": False, "quality": False}


def test_tsne_runs_on_the_top_50_principal_components(digit_affinities) -> None:  # type: ignore[no-untyped-def]
    x, _, _ = digit_affinities  # 64 pixels per digit
    features = torch.from_numpy(x[:400])
    reduced, info = project_module._tsne_input(features, "auto", "euclidean")
    reference = PCA(n_components=50).fit(x[:400].astype(np.float64))
    theirs = reference.transform(x[:400].astype(np.float64))
    signs = np.sign((reduced.double().numpy() * theirs).sum(axis=0))
    np.testing.assert_allclose(reduced.double().numpy(), theirs * signs, atol=1e-3)
    assert info == {"pca": 50, "pca_explained_variance": pytest.approx(reference.explained_variance_ratio_.sum())}
    # project() runs t-SNE on exactly that input: the same points as t-SNE of the reduced features.
    via_option = project(features, "tsne", perplexity=10, **FAST)
    on_reduced = project(reduced, "tsne", perplexity=10, pca=None, **FAST)
    assert torch.equal(via_option.points, on_reduced.points)
    assert via_option.params["pca"] == 50 and on_reduced.params["pca"] is None
    assert not torch.equal(project(features, "tsne", perplexity=10, pca=None, **FAST).points, via_option.points)
    assert project(features, "tsne", perplexity=10, pca=20, **FAST).params["pca"] == 20
    # Cosine distances change under centring, so "auto" leaves the features alone for other metrics.
    cosine = project(features, "tsne", perplexity=10, metric="cosine", neighbors="annoy", **FAST)
    assert cosine.params["pca"] is None
    # Features with 50 columns or fewer are not reduced.
    assert project(features[:, :40], "tsne", perplexity=10, **FAST).params["pca"] is None


def _exact_kl(P: object, points: np.ndarray) -> float:
    """KL(P || Q) over all pairs, with Q from the Student-t kernel of the points, in float64."""
    dense = np.asarray(P.todense(), dtype=np.float64)  # type: ignore[attr-defined]
    squared = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    q = 1 / (1 + squared)
    np.fill_diagonal(q, 0)
    q /= q.sum()
    mask = dense > 0
    return float((dense[mask] * np.log(dense[mask] / q[mask])).sum())


def test_final_kl_divergence_is_openTSNEs_and_the_exact_one(digit_affinities) -> None:  # type: ignore[no-untyped-def]
    x, _, P = digit_affinities
    ours = project(x, "tsne", pca=None, **FAST)
    assert ours.params["negative_gradient_method"] == "bh"
    # openTSNE itself, on the same affinities (exact neighbours, perplexity 30) with the same settings.
    embedding = TSNE(
        negative_gradient_method="bh", n_iter=100, early_exaggeration_iter=100, n_jobs=1, random_state=0
    ).fit(x, affinities=affinity.PrecomputedAffinities(P))
    np.testing.assert_allclose(ours.points.numpy(), np.asarray(embedding), atol=1e-4)
    assert ours.kl_divergence == pytest.approx(embedding.kl_divergence, rel=1e-6)
    # Barnes-Hut approximates the normalisation of Q; the exact sum over all pairs agrees to a percent.
    assert ours.kl_divergence == pytest.approx(_exact_kl(P, ours.points.double().numpy()), rel=0.01)
    assert f"KL {ours.kl_divergence:.3f}" in ours.title


def test_kl_divergence_falls_as_t_sne_runs_longer(digit_affinities) -> None:  # type: ignore[no-untyped-def]
    x, _, _ = digit_affinities
    options = {**FAST, "n_iter": 50}
    short = project(x[:500], "tsne", **options)
    longer = project(x[:500], "tsne", **{**options, "n_iter": 300})
    assert longer.kl_divergence < short.kl_divergence
    steps, values = zip(*longer.kl_history)
    assert steps == tuple(range(50, 401, 50))  # 100 exaggerated iterations, then 300
    assert longer.kl_history[: len(short.kl_history)] == short.kl_history  # the same run, only stopped later
    after_exaggeration = values[2:]
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(after_exaggeration))
    assert longer.kl_divergence <= values[-1]


def test_auto_schedule_ends_each_phase_once_its_kl_divergence_settles(digit_affinities) -> None:  # type: ignore[no-untyped-def]
    x, labels = digit_affinities[0][:700], digit_affinities[1][:700]
    auto = project(x, "tsne", labels=labels, n_jobs=1, progress=False)
    fixed = project(x, "tsne", labels=labels, n_jobs=1, progress=False, early_exaggeration_iter=250, n_iter=500)
    exaggerated, main = auto.params["iterations"]
    assert fixed.params["iterations"] == [250, 500]
    assert 100 <= exaggerated < 250 and 100 <= main < 500  # both ended early, at a check from the second on
    steps, values = zip(*auto.kl_history)
    assert steps[-1] == exaggerated + main
    for (_, tolerance), phase in zip(
        project_module.TSNE_PHASES.values(),
        ([v for s, v in auto.kl_history if s <= exaggerated], [v for s, v in auto.kl_history if s > exaggerated]),
    ):
        falls = [(earlier - later) / earlier for earlier, later in itertools.pairwise(phase)]
        assert falls[-1] < tolerance  # it stopped where the KL fell by less than the tolerance ...
        assert all(fall >= tolerance for fall in falls[:-1])  # ... and not before
    assert auto.kl_divergence == pytest.approx(values[-1])  # the embedding the last KL was measured on
    assert auto.kl_divergence > fixed.kl_divergence  # fewer iterations: a higher KL, but the same neighbourhoods
    assert auto.trustworthiness == pytest.approx(fixed.trustworthiness, abs=0.01)
    assert auto.knn_accuracy == pytest.approx(fixed.knn_accuracy, abs=0.01)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: project(torch.randn(100, 60), "tsne", dim=50, perplexity=5), "pass pca=50"),
        (lambda: project(torch.randn(100, 60), "tsne", perplexity=5, pca=0), "pca=0; pass the number"),
        (lambda: project(torch.randn(100, 60), "tsne", perplexity=5, pca=True), "pca=True"),
    ],
    ids=["dim-50", "pca-0", "pca-bool"],
)
def test_pca_step_bad_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInputError, match=message):
        call()


def test_every_core_means_one_thread_below_a_thousand_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import openTSNE

    seen: list[int] = []

    class Spy(openTSNE.TSNE):  # type: ignore[misc]
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            seen.append(kwargs["n_jobs"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(openTSNE, "TSNE", Spy)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    x = torch.randn(1000, 5, generator=torch.Generator().manual_seed(0))
    short = {"perplexity": 5, "early_exaggeration_iter": 1, "n_iter": 1, "progress": False, "quality": False}
    project(x[:999], "tsne", **short)  # the default, -1
    project(x[:999], "tsne", n_jobs=2, **short)  # a number given is kept
    project(x, "tsne", **short)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the cores this process was given
    project(x, "tsne", **short)
    project(x, "tsne", n_jobs=2, **short)
    assert seen == [1, 2, -1, 3, 2]


@pytest.mark.parametrize("neighbors", ["annoy"])  # pynndescent: the same call; its index compiles for minutes
@pytest.mark.parametrize("n, perplexity", [(300, 30.0), (40, 30.0)], ids=["k=90", "perplexity-capped"])
def test_approximate_affinities_are_openTSNEs_own(neighbors: str, n: int, perplexity: float) -> None:
    """The affinities built from the index deepscope builds (project.tsne_affinities) are those openTSNE's
    ``prepare_initial`` builds for the same TSNE: same neighbours, same P."""
    from deepscope.embed.project import tsne_affinities

    data = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    tsne = TSNE(perplexity=perplexity, neighbors=neighbors, random_state=3, n_jobs=1, verbose=False)
    ours = tsne_affinities(tsne, torch.from_numpy(data), neighbors, torch.device("cpu")).P
    theirs = tsne.prepare_initial(data).affinities.P
    assert ours.shape == theirs.shape == (n, n)
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-6, atol=1e-9)


def test_approximate_neighbours_do_not_import_pynndescent(tmp_path: Path) -> None:
    """openTSNE's own choice of index imports pynndescent to see whether it is there: its numba code compiles on
    import (24 s in a fresh environment). A t-SNE with an Annoy index never imports it."""
    code = (
        "import sys, torch\n"
        "from deepscope.embed import project\n"
        "r = project(torch.randn(200, 10), 'tsne', perplexity=10, neighbors='annoy', n_iter=10,\n"
        "            early_exaggeration_iter=10, n_jobs=1, progress=False, quality=False)\n"
        "print(r.params['neighbors'], 'pynndescent' in sys.modules)\n"
    )
    source = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(source)},
    )  # fmt: skip
    assert done.stdout.split() == ["annoy", "False"], done.stderr
