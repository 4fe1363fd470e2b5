"""Projections of a feature space to 2D or 3D (PCA, t-SNE, UMAP), with how much neighbourhood structure survived."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure
from .extract import Features, as_matrix
from .neighbors import nearest

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from PIL import Image

Method = Literal["pca", "tsne", "umap"]

# Each method's options and their defaults; t-SNE's are openTSNE's names (learning_rate="auto" is N / 12), and its
# neighbors="auto" is the exact search of tsne.exact_neighbors up to EXACT_NEIGHBOURS_UP_TO points, Annoy beyond.
# t-SNE's pca is deepscope's: the features' top principal components that t-SNE runs on (see _tsne_input).
OPTIONS: dict[str, dict[str, Any]] = {
    "pca": {},
    "tsne": {
        "perplexity": 30.0,
        "early_exaggeration": 12.0,
        "early_exaggeration_iter": "auto",
        "learning_rate": "auto",
        "n_iter": "auto",
        "initialization": "pca",
        "metric": "euclidean",
        "neighbors": "auto",
        "n_jobs": -1,
        "pca": "auto",
    },
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean", "n_epochs": None},
}
METHODS: tuple[str, ...] = tuple(OPTIONS)
# "exact": deepscope's blocked search (torch, on ``device``); the others are openTSNE's approximate indexes.
TSNE_NEIGHBORS = ("auto", "exact", "annoy", "pynndescent")
CAUTION = {
    "tsne": "t-SNE keeps neighbourhoods, not global geometry: distances between clusters are not meaningful.",
    "umap": "UMAP keeps neighbourhoods more than global geometry: distances between clusters are not reliable.",
}
QUALITY_K = 10  # neighbours for trustworthiness and the k-NN accuracy
# t-SNE's input is reduced to this many principal components first (pca="auto", euclidean metric), as van der
# Maaten & Hinton (2008) and the lectures do: it removes noise from the distances and speeds up the neighbour search.
TSNE_PCA_COMPONENTS = 50
# t-SNE's n_jobs=-1 (every core) runs one thread below this many points: an iteration there takes microseconds, and
# each of its parallel steps waits for every thread, so on a busy machine (or beside other processes, as in a test
# run on 2 cores) threads only wait on each other: 12 points took 30 s with 2 threads at load 20, 0.1 s with one.
ONE_THREAD_BELOW = 1000
# Iterations between two KL divergences in Projection.kl_history (openTSNE's callback period).
KL_EVERY = 50
# t-SNE's schedule with early_exaggeration_iter="auto" and n_iter="auto": each phase runs at most openTSNE's number
# of iterations (250 and 500), and ends at the first check (every KL_EVERY iterations, from the second on) where the
# KL divergence fell by less than this fraction since the last one. The neighbourhoods (trustworthiness, k-NN
# accuracy) settle long before the KL divergence does: on Fashion-MNIST they were within 0.01 of openTSNE's
# 750-iteration result at these stops (docs/benchmarks.md), while the KL goes on falling slowly as clusters
# tighten. Give the numbers of iterations to run a fixed schedule (openTSNE's: 250 and 500).
TSNE_PHASES = {"early_exaggeration_iter": (250, 0.02), "n_iter": (500, 0.04)}
_umap_compiled = False


@dataclass
class Projection(FigureDisplay):
    """Points of a feature space in 2D or 3D, and how faithful their neighbourhoods are.

    Attributes:
        points: float32 ``[N, dim]``.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``; ``params``: every option it ran with (PCA adds
            ``explained_variance_ratio``).
        trustworthiness: scikit-learn's trustworthiness with ``k = 10`` (1: every neighbour in the projection is
            a neighbour in the features), on a sample of ``quality_sample`` points for large sets.
        knn_accuracy: leave-one-out 10-NN accuracy of the labels in the projection (``None`` without labels):
            how well classes separate in the picture.
        kl_divergence: t-SNE only: KL(P || Q) of the final points, the objective t-SNE minimises (openTSNE's
            value); ``kl_history`` holds ``(iteration, KL)`` every 50 iterations, early exaggeration included
            (its KL is corrected for the exaggeration), to check that the optimisation has converged.
        labels, predictions, thumbnails: per point, for colouring and the image scatter.
    """

    points: Tensor
    method: str
    params: dict[str, Any]
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    thumbnails: np.ndarray | None = field(default=None, repr=False)
    trustworthiness: float | None = None
    knn_accuracy: float | None = None
    kl_divergence: float | None = None
    kl_history: list[tuple[int, float]] = field(default_factory=list, repr=False)
    seconds: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def title(self) -> str:
        names = ("perplexity", "pca", "n_neighbors", "min_dist")
        shown = {k: v for k, v in self.params.items() if k in names and v is not None}
        name = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[self.method]
        head = name + (" (" + ", ".join(f"{k}={v:g}" for k, v in shown.items()) + ")" if shown else "")
        quality = []
        if self.trustworthiness is not None:
            quality.append(f"trustworthiness {self.trustworthiness:.3f}")
        if self.knn_accuracy is not None:
            quality.append(f"{QUALITY_K}-NN accuracy {self.knn_accuracy:.3f}")
        if self.kl_divergence is not None:
            quality.append(f"KL {self.kl_divergence:.3f}")
        return head + ("\n" + ", ".join(quality) if quality else "")

    def draw(self, ax: Axes, color: str = "label", classes: Sequence[str] | None = None, size: float = 4) -> None:
        """Scatter the points on ``ax`` (a 3D axes for 3D points), coloured by label, prediction or correctness."""
        values = self._colours(color)
        coords = [self.points[:, i].numpy() for i in range(self.dim)]
        if values is None:
            ax.scatter(*coords, s=size, color="tab:blue", linewidths=0)
        elif color == "correct":
            for flag, name, colour in ((True, "correct", "tab:green"), (False, "wrong", "tab:red")):
                mask = values == flag
                ax.scatter(*(c[mask] for c in coords), s=size, color=colour, label=name, linewidths=0)
        else:
            from matplotlib import colormaps

            kinds = np.unique(values)
            cmap = colormaps["tab10" if len(kinds) <= 10 else "tab20"]
            for i, kind in enumerate(kinds):
                mask = values == kind
                name = classes[int(kind)] if classes is not None and np.issubdtype(kinds.dtype, np.integer) else kind
                ax.scatter(*(c[mask] for c in coords), s=size, color=cmap(i % cmap.N), label=str(name), linewidths=0)
        if values is not None and len(np.unique(values)) <= 20:
            ax.legend(markerscale=3, fontsize=7, loc="best", framealpha=0.7)
        ax.set_title(self.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if self.dim == 3:
            ax.set_zticks([])  # type: ignore[attr-defined]

    def figure(self, color: str = "label", classes: Sequence[str] | None = None, size: float = 4) -> NotebookFigure:
        """The scatter, coloured by ``"label"``, ``"prediction"`` or ``"correct"``, with the method's caution."""

        figure = new_figure(6.0, 5.6)
        ax = figure.add_subplot(projection="3d" if self.dim == 3 else None)
        self.draw(ax, color, classes, size)
        if self.method in CAUTION:
            figure.supxlabel(CAUTION[self.method], fontsize=8)
        return figure

    def image_scatter(
        self, size: int = 1200, snap: Literal["grid"] | None = None, columns: int | None = None
    ) -> Image.Image:
        """The thumbnails at their 2D positions on a ``size`` px canvas; ``snap="grid"``: snapped to a grid.

        The grid variant (the cs231n t-SNE figure) places each image in one cell of a ``columns`` x ``columns`` grid
        (at most 40 by default), by the assignment that moves the points least, so nothing overlaps.
        """
        from .images import grid_image, image_scatter

        if self.thumbnails is None:
            raise BadInputError(
                "no thumbnails; project a Features from ds.embed (which keeps them), or set .thumbnails."
            )
        if self.dim != 2:
            raise BadInputError(f"the image scatter is drawn from 2D points; this projection has dim={self.dim}.")
        if snap not in (None, "grid"):
            raise BadInputError(f"snap={snap!r}; pass None (free positions) or 'grid'.")
        points = self.points.numpy()
        return (
            grid_image(points, self.thumbnails, columns)
            if snap == "grid"
            else image_scatter(points, self.thumbnails, size)
        )

    def _colours(self, color: str) -> np.ndarray | None:
        if color not in ("label", "prediction", "correct"):
            raise BadInputError(f"color={color!r}; pass 'label', 'prediction' or 'correct'.")
        if color == "label":
            return self.labels
        if self.predictions is None:
            raise BadInputError(f"color={color!r} needs predictions; project a Features from ds.embed on a classifier.")
        if color == "prediction":
            return self.predictions
        if self.labels is None:
            raise BadInputError("color='correct' needs both labels and predictions.")
        return self.labels == self.predictions


@dataclass
class Projections(FigureDisplay):
    """Several projections of one feature space (one per value of a swept option), drawn side by side."""

    items: list[Projection]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Projection:
        return self.items[index]

    def figure(self, color: str = "label", classes: Sequence[str] | None = None, size: float = 4) -> NotebookFigure:

        figure = new_figure(4.6 * len(self.items), 4.8)
        for i, item in enumerate(self.items):
            ax = figure.add_subplot(1, len(self.items), i + 1, projection="3d" if item.dim == 3 else None)
            item.draw(ax, color, classes, size)
        if self.items[0].method in CAUTION:
            figure.supxlabel(CAUTION[self.items[0].method], fontsize=8)
        return figure


# Quality ------------------------------------------------------------------------------------------------------


def knn_accuracy(points: Tensor, labels: np.ndarray, k: int = QUALITY_K, sample: np.ndarray | None = None) -> float:
    """Leave-one-out ``k``-NN accuracy: how often the majority label of a point's ``k`` neighbours is its own.

    ``sample`` restricts the queries (the neighbours are always searched among all points); ties in the vote go
    to the smaller label code.
    """
    codes = torch.from_numpy(np.unique(labels, return_inverse=True)[1].reshape(-1))
    queries = torch.arange(len(points)) if sample is None else torch.from_numpy(sample)
    data = points.double()
    k = min(k, len(points) - 1)
    _, found = nearest(data[queries], data, k, own=queries)
    votes = torch.zeros(len(queries), int(codes.max()) + 1, dtype=torch.long)
    votes.scatter_add_(1, codes[found], torch.ones_like(found))
    return int((votes.argmax(dim=1) == codes[queries]).sum()) / len(queries)


def _quality(
    features: Tensor, points: Tensor, labels: np.ndarray | None, sample: int, seed: int | None
) -> tuple[float | None, float | None]:
    from sklearn.manifold import trustworthiness

    n = len(points)
    chosen = None if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    x = features.numpy() if chosen is None else features[chosen].numpy()
    y = points.numpy() if chosen is None else points[chosen].numpy()
    k = min(QUALITY_K, (len(x) - 1) // 2)  # scikit-learn needs k < n / 2
    trust = float(trustworthiness(x, y, n_neighbors=k)) if k >= 1 else None
    accuracy = knn_accuracy(points, labels, sample=chosen) if labels is not None and n > 1 else None
    return trust, accuracy


# Methods ------------------------------------------------------------------------------------------------------


def _pca(x: Tensor, dim: int) -> tuple[Tensor, dict[str, Any]]:
    """The projection on the top ``dim`` principal axes (eigenvectors of the covariance, in float64).

    Each axis's sign makes its largest loading positive, so the result does not depend on the solver. With fewer
    points than features the axes come from the points' Gram matrix (an n x n problem instead of d x d: the same
    non-zero eigenvalues, each axis the centred points' combination its eigenvector gives); axes beyond the points'
    rank have no variance and project everything to 0.
    """
    data = x.double()
    centred = data - data.mean(dim=0)
    (n, d), scale = centred.shape, max(1, len(data) - 1)
    if n < d:
        values, vectors = torch.linalg.eigh(centred @ centred.T / scale)
        order = values.argsort(descending=True)[:dim]
        # an eigenvalue at rounding level (the centred points span n - 1 dimensions at most) gives no axis: 0
        spanned = values[order] > values.max().clamp(min=0) * max(n, d) * torch.finfo(values.dtype).eps
        axes = centred.T @ vectors[:, order] * spanned
        axes = axes / axes.norm(dim=0).clamp(min=1e-300)
        if dim > n:  # no variance left along any further axis
            axes = torch.cat([axes, axes.new_zeros(d, dim - n)], dim=1)
            values, order = torch.cat([values, values.new_zeros(dim - n)]), torch.cat([order, torch.arange(n, dim)])
    else:
        values, vectors = torch.linalg.eigh(centred.T @ centred / scale)
        order = values.argsort(descending=True)[:dim]
        axes = vectors[:, order]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    axes = axes * torch.where(signs == 0, 1.0, signs)
    ratio = (values[order] / values.sum().clamp(min=1e-300)).tolist()
    return (centred @ axes).float(), {"explained_variance_ratio": ratio}


def _tsne_input(x: Tensor, pca: int | str | None, metric: str) -> tuple[Tensor, dict[str, Any]]:
    """The features t-SNE runs on: their top ``pca`` principal components (``"auto"``: 50 for the euclidean metric,
    where projecting on the principal axes is a rotation that drops the least-varying directions; other metrics
    are not preserved by it, so they get the features unchanged), or the features themselves (``None``, or no more
    columns than ``pca``)."""
    components = (TSNE_PCA_COMPONENTS if metric == "euclidean" else None) if pca == "auto" else pca
    if not isinstance(components, int) or x.shape[1] <= components:
        return x, {"pca": None}
    reduced, info = _pca(x, components)
    return reduced, {"pca": components, "pca_explained_variance": float(sum(info["explained_variance_ratio"]))}


@dataclass
class _Phase:
    """The t-SNE phase running: iterations before it, its tolerance (None: no early stop), the last KL seen."""

    before: int = 0
    tolerance: float | None = None
    last: float | None = None
    stopped: int | None = None  # the iteration it stopped at


def _tsne(
    x: Tensor,
    dim: int,
    seed: int | None,
    progress: bool | None,
    options: dict[str, Any],
    device: torch.device,
    on_progress: Callable[[float], None] | None,
) -> tuple[Tensor, dict[str, Any]]:
    from openTSNE import TSNE

    from .tsne import EXACT_NEIGHBOURS_UP_TO, Gradient

    options = dict(options)
    neighbors = options.pop("neighbors")
    x, reduction = _tsne_input(x, options.pop("pca"), options["metric"])
    n = len(x)
    if options["n_jobs"] == -1 and n < ONE_THREAD_BELOW:
        options["n_jobs"] = 1
    elif options["n_jobs"] == -1 and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        options["n_jobs"] = max(1, int(os.environ["OMP_NUM_THREADS"]))  # the cores this process was given
    if neighbors == "auto":
        small = n <= EXACT_NEIGHBOURS_UP_TO or device.type != "cpu"
        neighbors = "exact" if small and options["metric"] == "euclidean" else "annoy"
    phases = {  # each phase's most iterations, and the tolerance that ends it early (None: runs them all)
        name: (cap, tolerance) if options[name] == "auto" else (options[name], None)
        for name, (cap, tolerance) in TSNE_PHASES.items()
    }
    options = {name: phases[name][0] if name in phases else value for name, value in options.items()}
    iterations = options["early_exaggeration_iter"] + options["n_iter"]
    disable = None if progress is None else not progress
    bar = tqdm(
        total=iterations, desc=f"t-SNE (perplexity {options['perplexity']:g})", unit="it", disable=disable, leave=False
    )
    history: list[tuple[int, float]] = []
    phase = _Phase()

    def callbacks(iteration: int, error: float, _embedding: object) -> bool:
        done = phase.before + iteration  # openTSNE counts each phase's iterations from 1
        bar.update(done - (history[-1][0] if history else 0))
        history.append((done, float(error)))
        if on_progress is not None:
            on_progress(done / iterations)
        last, phase.last = phase.last, float(error)
        # Stop when the KL divergence fell by less than the tolerance since the last check; openTSNE then keeps
        # the embedding the KL was measured on.
        if phase.tolerance is not None and last is not None and last - float(error) < phase.tolerance * abs(last):
            phase.stopped = iteration
            return True
        return False

    # FFT-interpolated gradients (linear in N) exist for 1 and 2 dimensions only, so 3D uses Barnes-Hut; below
    # 10,000 points Barnes-Hut is also the faster one on a CPU (openTSNE's own "auto" rule), not on a GPU.
    method: Any = "bh"
    if dim <= 2 and (n >= 10_000 or device.type != "cpu"):
        jobs = options["n_jobs"]
        method = Gradient(device, threads=jobs if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + jobs))
    ran: list[int] = []  # iterations each phase ran
    with bar:
        tsne = TSNE(  # its neighbour search is never used: the affinities are given
            n_components=dim,
            random_state=seed,
            negative_gradient_method=method,
            callbacks=callbacks,
            callbacks_every_iters=KL_EVERY,
            verbose=False,
            **options,
        )
        # openTSNE's TSNE.fit, phase by phase, so that a phase's early stop does not skip the next one.
        points = tsne.prepare_initial(_float32(x), affinities=tsne_affinities(tsne, x, neighbors, device))
        for name, exaggeration, momentum in (
            ("early_exaggeration_iter", tsne.early_exaggeration, tsne.initial_momentum),
            ("n_iter", tsne.exaggeration, tsne.final_momentum),
        ):
            steps = options[name]
            phase = _Phase(before=sum(ran), tolerance=phases[name][1])
            if steps > 0:
                # An interrupted phase is no error: openTSNE returns the embedding (the same array, in place).
                points = points.optimize(
                    n_iter=steps, exaggeration=exaggeration, momentum=momentum, inplace=True, propagate_exception=False
                )
            ran.append(steps if phase.stopped is None else phase.stopped)
    used = f"fft ({method.backend})" if isinstance(method, Gradient) else method
    return torch.from_numpy(np.asarray(points, dtype=np.float32)), {
        **reduction,
        "negative_gradient_method": used,
        "neighbors": neighbors,
        "device": str(device),
        "kl_divergence": float(points.kl_divergence),
        "kl_history": history,
        "iterations": ran,
    }


def _float32(x: Tensor) -> np.ndarray:
    return x.numpy().astype(np.float32, copy=False)


def tsne_affinities(tsne: Any, x: Tensor, neighbors: str, device: torch.device) -> Any:
    """The affinities of ``x`` for ``tsne`` (its perplexity, metric, seed and threads), its neighbours searched by
    ``neighbors``: "exact" (:func:`~deepscope.embed.tsne.exact_neighbors`, on ``device``), or "annoy" or
    "pynndescent", the affinities openTSNE's ``TSNE.prepare_initial`` computes with that index. The index is built
    here, not by openTSNE: its own choice of index imports pynndescent only to see whether it is installed (it is,
    with the umap extra), and that import compiles pynndescent's numba code: 24 s in a fresh environment, 1.2 s each
    process after, spent for an Annoy index."""
    from openTSNE import affinity, nearest_neighbors

    from .tsne import exact_neighbors

    n = len(x)
    if neighbors == "exact":
        k = min(n - 1, int(3 * tsne.perplexity))  # openTSNE's number of neighbours for a perplexity
        indices, distances = exact_neighbors(x, k, device)
        return affinity.PerplexityBasedNN(
            knn_index=nearest_neighbors.PrecomputedNeighbors(indices, distances),
            perplexity=tsne.perplexity,
            n_jobs=tsne.n_jobs,
        )
    index = {"annoy": nearest_neighbors.Annoy, "pynndescent": nearest_neighbors.NNDescent}[neighbors]
    usable = (n - 1) / 3 if 3 * tsne.perplexity > n - 1 else tsne.perplexity  # openTSNE's cap on the perplexity
    return affinity.MultiscaleMixture(
        perplexities=[tsne.perplexity],
        metric=tsne.metric,
        n_jobs=tsne.n_jobs,
        random_state=tsne.random_state,
        knn_index=index(
            _float32(x),
            k=min(n - 1, int(3 * usable)),
            metric=tsne.metric,
            metric_params=tsne.metric_params,
            n_jobs=tsne.n_jobs,
            random_state=tsne.random_state,
            knn_kwargs=tsne.knn_kwargs,
        ),
    )


def _umap(
    x: Tensor, dim: int, seed: int | None, progress: bool | None, options: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    global _umap_compiled
    import umap  # checked in project()

    if not _umap_compiled:
        warnings.warn(
            "the first UMAP call in a process compiles its numba code, which takes 10-30 s.",
            RuntimeWarning,
            stacklevel=3,
        )
    show = progress if progress is not None else sys.stderr.isatty()
    # A seed makes umap-learn single-threaded (it warns otherwise); seed=None lets it use every core.
    reducer = umap.UMAP(
        n_components=dim,
        random_state=seed,
        n_jobs=1 if seed is not None else -1,
        verbose=show,
        tqdm_kwds={"disable": not show},
        **options,
    )
    points = reducer.fit_transform(x.numpy())
    _umap_compiled = True
    return torch.from_numpy(np.asarray(points, dtype=np.float32)), {}


# project() ----------------------------------------------------------------------------------------------------


def _check_options(method: str, params: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The full options of each run: one run, or one per value of the single option given as a list."""
    unknown = [name for name in params if name not in OPTIONS[method]]
    if unknown:
        valid = ", ".join(OPTIONS[method]) or "none"
        raise BadInputError(f"{method} has no option {unknown[0]!r}; its options are: {valid}.")
    swept = [name for name, value in params.items() if isinstance(value, (list, tuple))]
    if len(swept) > 1:
        raise BadInputError(f"only one option may be a list of values to compare; got lists for {', '.join(swept)}.")
    runs = [dict(OPTIONS[method], **params)]
    if swept:
        if not params[swept[0]]:
            raise BadInputError(f"{swept[0]} is an empty list; give at least one value.")
        runs = [dict(runs[0], **{swept[0]: value}) for value in params[swept[0]]]
    for options in runs:
        if method == "tsne":
            perplexity = options["perplexity"]
            if not isinstance(perplexity, (int, float)) or isinstance(perplexity, bool) or perplexity <= 0:
                raise BadInputError(f"perplexity={perplexity!r}; pass a positive number (typically 5 to 50).")
            if perplexity >= n or 3 * perplexity >= n:
                raise BadInputError(
                    f"perplexity={perplexity:g} with {n} points: the perplexity must be lower than the number of "
                    f"points, and openTSNE uses 3 x perplexity neighbours, so it needs 3 x perplexity < {n}; "
                    f"pass perplexity < {n / 3:g}."
                )
            pca = options["pca"]
            if pca != "auto" and pca is not None and (isinstance(pca, bool) or not isinstance(pca, int) or pca < 1):
                raise BadInputError(
                    f"pca={pca!r}; pass the number of principal components t-SNE should run on (e.g. 50), 'auto' "
                    f"({TSNE_PCA_COMPONENTS} for the euclidean metric) or None (the features as they are)."
                )
            for name in TSNE_PHASES:
                steps = options[name]
                if steps != "auto" and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
                    raise BadInputError(
                        f"{name}={steps!r}; pass a number of iterations (0 or more), or 'auto' (at most "
                        f"{TSNE_PHASES[name][0]}, ending once the KL divergence has settled)."
                    )
            if options["neighbors"] not in TSNE_NEIGHBORS:
                raise BadInputError(
                    f"neighbors={options['neighbors']!r}; pass one of {', '.join(map(repr, TSNE_NEIGHBORS))}."
                )
            if options["neighbors"] == "exact" and options["metric"] != "euclidean":
                raise BadInputError(
                    f"the exact neighbour search measures euclidean distances, not metric={options['metric']!r}; "
                    "pass neighbors='annoy' or 'pynndescent' for other metrics."
                )
        if method == "umap":
            neighbours = options["n_neighbors"]
            if not isinstance(neighbours, int) or not 2 <= neighbours < n:
                raise BadInputError(f"n_neighbors={neighbours!r} with {n} points; pass 2 <= n_neighbors < {n}.")
    return runs


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise BadInputError(f"device={device!r} is not a torch device; pass 'cpu', 'cuda' or 'cuda:1'.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device={device!r}, but torch sees no CUDA GPU here; pass device='cpu'.")
    return chosen


def _labels(labels: object, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.ndim != 1:
        raise BadInputError(f"labels have shape {array.shape}; pass one label per point, shape ({n},).")
    if len(array) != n:
        raise BadInputError(f"{len(array)} labels for {n} points; pass one label per point.")
    return array


def project(
    features: object,
    method: Method = "tsne",
    dim: int = 2,
    labels: object = None,
    seed: int | None = 0,
    progress: bool | None = None,
    quality: bool = True,
    quality_sample: int = 5000,
    device: str | torch.device | None = None,
    on_progress: Callable[[float], None] | None = None,
    **params: Any,
) -> Projection | Projections:
    """Project features ``[N, D]`` to ``dim`` = 2 or 3 dimensions, and measure how much structure survived.

    Args:
        features: a :class:`Features` (its labels, predictions and thumbnails come along) or a tensor / array.
        method: ``"pca"`` (torch, exact), ``"tsne"`` (openTSNE: FFT gradients in 2D, Barnes-Hut in 3D) or
            ``"umap"`` (umap-learn, the optional extra ``deepscope[umap]``).
        dim: 2 or 3.
        labels: one label per point (default: the Features' labels), for colours and the k-NN accuracy.
        seed: the random seed of t-SNE and UMAP (``None``: unseeded; UMAP then runs on every core).
        progress: show a progress bar; ``None`` shows it on a terminal only.
        quality: compute trustworthiness and k-NN accuracy (on ``quality_sample`` points for larger sets).
        device: where t-SNE's neighbour search (and, on a GPU, its gradient) runs; default: a GPU when torch sees
            one, else the CPU.
        on_progress: called with the fraction of the work done (0 to 1) as t-SNE goes (every 50 iterations);
            PCA and UMAP call it once, at the end.
        **params: the method's options (see ``OPTIONS``): t-SNE ``pca`` (run on the features' top principal
            components: ``"auto"``, 50 of them for the euclidean metric when there are more columns; an int; or
            ``None``, the features as they are), ``perplexity``, ``early_exaggeration``,
            ``early_exaggeration_iter``, ``learning_rate``, ``n_iter``, ``initialization``, ``metric``,
            ``neighbors`` (``"auto"``: exact up to 60,000 points or on a GPU, else Annoy; ``"exact"``, ``"annoy"``,
            ``"pynndescent"``), ``n_jobs`` (-1: every core, or ``OMP_NUM_THREADS`` when set; one thread below
            1,000 points); UMAP ``n_neighbors``, ``min_dist``, ``metric``, ``n_epochs``. One option may be a list
            (``perplexity=[5, 30, 50]``): one projection per value, drawn side by side.

    Returns:
        A :class:`Projection` (``points``, ``trustworthiness``, ``knn_accuracy``, t-SNE's ``kl_divergence``,
        ``figure()``, ``image_scatter()``), or :class:`Projections` when an option was a list.
    """
    if method not in OPTIONS:
        raise BadInputError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}.")
    if dim not in (2, 3):
        pca_hint = (
            f" To reduce the features to {dim} dimensions before t-SNE, pass pca={dim} (t-SNE runs on the top "
            f"{TSNE_PCA_COMPONENTS} principal components by default)."
            if isinstance(dim, int) and dim > 3 and method == "tsne"
            else ""
        )
        raise BadInputError(f"dim={dim!r}; a projection has 2 or 3 dimensions.{pca_hint}")
    x = as_matrix(features)
    n = x.shape[0]
    if n <= dim:
        raise BadInputError(f"{n} points cannot be projected to {dim} dimensions; pass more than {dim} points.")
    given = labels if labels is not None else (features.labels if isinstance(features, Features) else None)
    label_array = _labels(given, n)
    runs = _check_options(method, params, n)
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise BadInputError(
                "UMAP needs the umap-learn package, an optional extra: pip install deepscope[umap]."
            ) from None
    predictions = (
        features.predictions.numpy() if isinstance(features, Features) and features.predictions is not None else None
    )
    thumbnails = features.thumbnails if isinstance(features, Features) else None

    chosen_device = _device(device)

    results = []
    for index, options in enumerate(runs):
        # Several runs (a list of values) report one fraction over all of them.
        def done(fraction: float, index: int = index) -> None:
            if on_progress is not None:
                on_progress((index + fraction) / len(runs))

        start = time.perf_counter()
        if method == "pca":
            points, extra = _pca(x, dim)
        elif method == "tsne":
            points, extra = _tsne(x, dim, seed, progress, options, chosen_device, done)
        else:
            points, extra = _umap(x, dim, seed, progress, options)
        done(1.0)
        kl_divergence, kl_history = extra.pop("kl_divergence", None), extra.pop("kl_history", [])
        seconds = time.perf_counter() - start
        trust, accuracy = _quality(x, points, label_array, quality_sample, seed) if quality else (None, None)
        results.append(
            Projection(
                points=points,
                method=method,
                params={**options, **extra, "dim": dim, "seed": seed},
                labels=label_array,
                predictions=predictions,
                thumbnails=thumbnails,
                trustworthiness=trust,
                knn_accuracy=accuracy,
                kl_divergence=kl_divergence,
                kl_history=kl_history,
                seconds=seconds,
            )
        )
    swept = any(isinstance(value, (list, tuple)) for value in params.values())
    return Projections(results) if swept else results[0]
