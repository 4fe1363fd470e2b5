"""t-SNE of 20,000 x 50 points: ``ds.project(method="tsne")`` (openTSNE) vs scikit-learn's ``TSNE``, one process.

The points are 10 Gaussian clusters in 50 dimensions (centres 1.5 apart per axis, unit noise), so every run has
structure to keep. deepscope runs with its defaults (openTSNE's schedule: perplexity 30, PCA initialisation,
learning rate N / 12, 250 early-exaggeration iterations at 12 and 500 more; exact neighbours; all cores).
scikit-learn runs twice: as a user calls it (``TSNE(perplexity=30)``: its defaults are PCA initialisation, the
same learning rate, 250 + 750 iterations) and on deepscope's 750-iteration schedule. Each is timed once (a run
takes a minute); the quality is scikit-learn's trustworthiness (k = 10) on the same 2,000-point sample of all.

Goal (issue 6): at least 4x faster than scikit-learn, no worse trustworthiness.
Run: .venv/bin/python bench/bench_tsne.py [--points 20000] [--quick]   (--quick: 5,000 points)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import report
from sklearn.manifold import TSNE, trustworthiness

from deepscope.embed import knn_accuracy, project


def clusters(points: int, dims: int = 50, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, points)
    centres = rng.normal(scale=1.5, size=(classes, dims))
    return (centres[labels] + rng.normal(size=(points, dims))).astype(np.float32), labels


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="5,000 points")
    args = parser.parse_args(argv)
    points = 5_000 if args.quick else args.points
    x, labels = clusters(points)
    results: dict[str, np.ndarray] = {}
    times: list[tuple[str, float]] = []

    def timed(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        results[name] = np.asarray(fn())
        times.append((name, time.perf_counter() - start))
        print(f"  {name}: {times[-1][1]:.1f} s", flush=True)

    timed(
        "deepscope project tsne (openTSNE)",
        lambda: project(x, "tsne", perplexity=30, seed=0, progress=False, quality=False).points,
    )
    # scikit-learn as a user calls it (its defaults: 1,000 iterations), and on deepscope's schedule (750).
    timed(
        "scikit-learn TSNE (its defaults)",
        lambda: TSNE(perplexity=30, random_state=0, n_jobs=-1).fit_transform(x),
    )
    timed(
        "scikit-learn TSNE (750 iterations)",
        lambda: TSNE(
            perplexity=30, init="pca", learning_rate="auto", max_iter=750, random_state=0, n_jobs=-1
        ).fit_transform(x),
    )
    rows = report(f"t-SNE of {points} x {x.shape[1]} points", times, reference="scikit-learn TSNE (its defaults)")
    ours, same = times[0], times[2]
    print(f"  on the same 750-iteration schedule: {same[1] / ours[1]:.2f}x")
    sample = np.random.default_rng(1).choice(points, min(points, 2_000), replace=False)
    for name, embedded in results.items():
        trust = trustworthiness(x[sample], embedded[sample], n_neighbors=10)
        accuracy = knn_accuracy(torch.from_numpy(embedded[sample]), labels[sample])
        print(f"  {name:<44} trustworthiness {trust:.4f}   10-NN accuracy {accuracy:.4f}")
        rows[f"{name} trustworthiness"] = trust
    return rows


if __name__ == "__main__":
    main()
