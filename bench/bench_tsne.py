"""t-SNE of Fashion-MNIST: ``ds.project(method="tsne")`` against openTSNE as users call it, at 20,000 and 70,000 points.

The 70,000 images (training and test sets, from the Debian package's IDX files, ``/usr/share/datasets/fashion-mnist``)
are scaled to [0, 1] and reduced to their top 50 principal components once; the 20,000-point set is a random
sample of them (seed 0). Both libraries get the same 50 columns, 2 threads (``torch.set_num_threads(2)``,
``n_jobs=2``) and seed 0, one after the other in this process:

- openTSNE as a careful user calls it: ``openTSNE.TSNE(n_jobs=2, random_state=0).fit(x)`` (Annoy neighbours, its
  FFT gradient, 250 early-exaggeration iterations and 500 more);
- deepscope with its defaults: ``project(x, "tsne", n_jobs=2, seed=0)`` (exact neighbours, the gradient's two parts
  side by side, each phase ending once its KL divergence has settled).

Quality on the same 5,000-point sample for both (as ``project`` measures it): scikit-learn's trustworthiness
(k = 10) and the leave-one-out 10-NN accuracy of the labels. The script prints wall and CPU seconds (all threads of
this process; on a loaded machine the steadier figure), openTSNE's time divided by deepscope's, the load average,
and deepscope's iterations and KL divergence.

Goal (issue 18): at least 1.5x openTSNE's speed at both sizes, trustworthiness and 10-NN accuracy within 0.01.
Run: .venv/bin/python bench/bench_tsne.py [--sizes 20000 70000] [--quick]   (--quick: 5,000 points)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion_pca(components: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images as their top ``components`` principal components, and their labels."""
    from deepscope.demo.data import find_idx_files, read_idx
    from deepscope.embed.project import _pca

    files = find_idx_files(FASHION)
    if files is None:
        raise SystemExit(f"Fashion-MNIST's IDX files are not in {FASHION}: apt-get install dataset-fashion-mnist")
    images = np.concatenate([read_idx(files["train_images"]), read_idx(files["test_images"])])
    labels = np.concatenate([read_idx(files["train_labels"]), read_idx(files["test_labels"])])
    pixels = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
    return _pca(pixels, components)[0].numpy(), labels.astype(np.int64)


def quality(x: np.ndarray, points: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """Trustworthiness (k = 10) and 10-NN accuracy on ``sample``, as ``project`` measures them."""
    from sklearn.manifold import trustworthiness

    from deepscope.embed import knn_accuracy

    trust = float(trustworthiness(x[sample], points[sample], n_neighbors=10))
    accuracy = knn_accuracy(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)), labels, sample=sample)
    return trust, accuracy


def one_size(x: np.ndarray, labels: np.ndarray, threads: int) -> dict[str, Any]:
    from openTSNE import TSNE

    from deepscope import project

    n = len(x)
    sample = np.sort(np.random.default_rng(1).choice(n, min(n, 5000), replace=False))
    figures: dict[str, Any] = {"points": n}
    runs = {
        "openTSNE": lambda: np.asarray(TSNE(n_jobs=threads, random_state=0).fit(x)),
        "deepscope": lambda: project(x, "tsne", n_jobs=threads, seed=0, quality=False, progress=False),
    }
    print(f"\nt-SNE of {n} Fashion-MNIST images (50 principal components), {threads} threads", flush=True)
    for name, run in runs.items():
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        points = result if isinstance(result, np.ndarray) else result.points.numpy()
        trust, accuracy = quality(x, points, labels, sample)
        figures[name] = {"wall_s": wall, "cpu_s": cpu, "load": load, "trust": trust, "knn": accuracy}
        extra = ""
        if not isinstance(result, np.ndarray):
            figures[name].update(iterations=result.params["iterations"], kl=result.kl_divergence)
            extra = f"  iterations {result.params['iterations']}, KL {result.kl_divergence:.3f}"
        print(
            f"  {name:<10} {wall:7.1f} s wall  {cpu:7.1f} s CPU  (load {load:.1f})  trustworthiness {trust:.4f}"
            f"  10-NN accuracy {accuracy:.4f}{extra}",
            flush=True,
        )
    theirs, ours = figures["openTSNE"], figures["deepscope"]
    figures["speedup_wall"] = theirs["wall_s"] / ours["wall_s"]
    figures["speedup_cpu"] = theirs["cpu_s"] / ours["cpu_s"]
    print(
        f"  openTSNE / deepscope: {figures['speedup_wall']:.2f}x wall, {figures['speedup_cpu']:.2f}x CPU;"
        f" trustworthiness {ours['trust'] - theirs['trust']:+.4f}, 10-NN accuracy {ours['knn'] - theirs['knn']:+.4f}",
        flush=True,
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 70_000], help="points (default 20000 70000)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--quick", action="store_true", help="5,000 points only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, labels = fashion_pca()
    results = {}
    for size in [5_000] if args.quick else args.sizes:
        pick = np.sort(np.random.default_rng(0).choice(len(x), size, replace=False)) if size < len(x) else None
        subset = (x, labels) if pick is None else (x[pick], labels[pick])
        results[size] = one_size(np.ascontiguousarray(subset[0]), subset[1], args.threads)
    return results


if __name__ == "__main__":
    main()
