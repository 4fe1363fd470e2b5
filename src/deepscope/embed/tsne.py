"""t-SNE's two expensive steps, faster than openTSNE does them, under openTSNE's optimiser.

openTSNE spends its time on (1) approximate nearest neighbours (Annoy) and (2) each iteration's gradient, whose
repulsion is interpolated on a grid and convolved by FFT (Linderman et al. 2019, "FIt-SNE") in a single thread.
Here (1) is an exact search by blocked matrix products in torch, and (2) runs the repulsion beside the attraction
instead of before it (on a CPU), or both in torch (on a GPU). Everything else (perplexity calibration, the optimiser
and its schedule) stays openTSNE's, so a result is the t-SNE openTSNE would compute, with exact neighbours.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .neighbors import nearest

# Exact neighbours cost O(N^2 D), Annoy about O(N log N): at 20,000 x 50 points, 1.3 s against 6.5 s on 2 cores, so
# they cross near 100,000 points (extrapolated); past this many, on a CPU, openTSNE's Annoy is used.
EXACT_NEIGHBOURS_UP_TO = 60_000


def exact_neighbors(x: Tensor, k: int, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by euclidean distance: ``(indices, distances)``, ``[N, k]``, nearest first.

    Candidates come from :func:`~deepscope.embed.neighbors.nearest` (the expansion |a|^2 - 2 a.b + |b|^2, one matrix
    product a block); the distances returned are recomputed as |a - b| for the chosen pairs, so they are exact even
    where the expansion cancels.
    """
    data = x.to(device=device, dtype=torch.float32)
    data = data - data.mean(dim=0)  # the expansion loses less precision near the origin
    n = len(data)
    everyone = torch.arange(n, device=data.device)
    _, chosen = nearest(data, data, k, own=everyone)
    rows = max(1, 2**23 // (k * data.shape[1]))  # differences held at once: 32 MB of float32
    exact = torch.cat([(data[chosen[i : i + rows]] - data[i : i + rows, None]).norm(dim=2) for i in range(0, n, rows)])
    exact, order = exact.sort(dim=1)
    return chosen.gather(1, order).cpu().numpy(), exact.double().cpu().numpy()


def _smooth(n: int) -> int:
    """The smallest number >= ``n`` with no prime factor above 5: FFTs of such sizes are the fast ones."""
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def _lagrange_weights(u: Tensor, points: int) -> Tensor:
    """Weights ``[..., points]`` of the Lagrange polynomials through nodes ``(k + 0.5) / points`` at ``u`` in [0, 1]."""
    nodes = (torch.arange(points, dtype=u.dtype, device=u.device) + 0.5) / points
    weights = []
    for k in range(points):
        weight = torch.ones_like(u)
        for m in range(points):
            if m != k:
                weight = weight * (u - nodes[m]) / (nodes[k] - nodes[m])
        weights.append(weight)
    return torch.stack(weights, dim=-1)


def repulsion(
    y: Tensor, interpolation_points: int = 3, min_intervals: int = 50, interval: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The t-SNE repulsion of an embedding ``y`` ``[N, d]`` (d = 1 or 2), interpolated on a grid (FIt-SNE).

    Returns ``(forces, z)``: ``forces[i] = sum_j q_ij^2 (y_i - y_j)`` and ``z = sum_{i != j} q_ij`` with
    ``q_ij = 1 / (1 + |y_i - y_j|^2)``; the repulsive part of the KL gradient is ``-forces / z``.

    Both sums need only the kernel ``q^2``, convolved with four charges per point (1, y and |y|^2; Linderman et al.
    2019): the charges are spread to a uniform grid of ``interpolation_points`` Lagrange nodes per interval
    (intervals of ``interval`` units, at least ``min_intervals`` per axis), convolved by FFT, and read back at the
    points with the same weights. The error falls with the interval's width (defaults: openTSNE's and FIt-SNE's).
    """
    n, dims = y.shape
    p = interpolation_points
    centre = (y.max() + y.min()) / 2  # charges relative to the grid's centre: smaller numbers, less cancellation
    y = y - centre
    low, high = float(y.min()), float(y.max())
    intervals = _smooth(max(min_intervals, math.ceil((high - low) / interval)))
    width = max(high - low, 1e-12) / intervals
    position = (y - low) / width
    box = position.floor().clamp(max=intervals - 1)
    weights = _lagrange_weights(position - box, p)  # [N, d, p]
    nodes = (box.long() * p)[..., None] + torch.arange(p, device=y.device)  # grid index per axis, [N, d, p]
    m = intervals * p  # grid nodes per axis, spacing width / p
    if dims == 1:
        weight, node = weights[:, 0], nodes[:, 0]
    else:
        weight = (weights[:, 0, :, None] * weights[:, 1, None, :]).reshape(n, p * p)
        node = (nodes[:, 0, :, None] * m + nodes[:, 1, None, :]).reshape(n, p * p)
    charges = torch.cat([torch.ones_like(y[:, :1]), y, (y * y).sum(dim=1, keepdim=True)], dim=1)  # [N, d + 2]
    spread = (weight[..., None] * charges[:, None, :]).reshape(-1, dims + 2)
    grid = torch.zeros(m**dims, dims + 2, dtype=y.dtype, device=y.device).index_add_(0, node.reshape(-1), spread)
    grid = grid.T.reshape(dims + 2, *([m] * dims))

    # The kernel on the grid's offsets, wrapped for a circular convolution of twice the grid's size.
    steps = torch.arange(2 * m, dtype=y.dtype, device=y.device)
    offset = torch.where(steps < m, steps, steps - 2 * m) * (width / p)
    squared = offset**2 if dims == 1 else offset[:, None] ** 2 + offset[None, :] ** 2
    kernel = 1.0 / (1.0 + squared) ** 2
    size = [2 * m] * dims
    axes = tuple(range(-dims, 0))
    spectrum = torch.fft.rfftn(grid, s=size, dim=axes) * torch.fft.rfftn(kernel, s=size, dim=axes)
    potential = torch.fft.irfftn(spectrum, s=size, dim=axes)
    potential = potential[(slice(None),) + (slice(0, m),) * dims].reshape(dims + 2, -1).T  # [grid nodes, d + 2]
    phi = (potential[node] * weight[..., None]).sum(dim=1)  # [N, d + 2]: sum_j q_ij^2 * charge_j (j = i included)

    ones, first, squares = phi[:, 0], phi[:, 1 : 1 + dims], phi[:, -1]
    forces = y * ones[:, None] - first  # a point's own term cancels here ...
    z = ((1 + (y * y).sum(dim=1)) * ones - 2 * (y * first).sum(dim=1) + squares).sum() - n  # ... and adds 1 here
    return forces, z


class Gradient:
    """openTSNE's objective function (``negative_gradient_method=``) for FFT-interpolated t-SNE, faster than its own.

    Called once per iteration with the embedding and the (possibly exaggerated) affinity matrix ``P``; returns
    ``(kl_divergence, gradient)`` as openTSNE's ``kl_divergence_fft`` does (the constant factor 4 of the gradient is
    in openTSNE's learning rate). The gradient has two parts:

    - on a CPU (``backend="openTSNE"``), openTSNE's compiled functions, but side by side: its interpolated
      repulsion runs in one thread only, so it runs in a thread of its own while the attraction (a sum over P's
      non-zeros) takes the other ``threads - 1``; openTSNE runs one after the other (measured, 20,000 points on 2
      cores: 16.0 s against 19.2 s for the whole t-SNE);
    - on a GPU (``backend="torch"``), both in torch: :func:`repulsion` and a gather / scatter over P.
    """

    def __init__(self, device: torch.device | str = "cpu", threads: int = 1, backend: str | None = None) -> None:
        self.device = torch.device(device)
        self.threads = max(1, threads)
        self.backend = backend or ("openTSNE" if self.device.type == "cpu" else "torch")
        self._structure: tuple[Any, Tensor, Tensor] | None = None
        self._worker_share = 0.0  # of the attraction's rows, summed beside the repulsion (see _compiled)

    def __call__(
        self,
        embedding: np.ndarray,
        P: Any,
        dof: float = 1,
        fft_params: dict[str, Any] | None = None,
        should_eval_error: bool = False,
        reference_embedding: Any = None,
        **_: Any,
    ) -> tuple[float | None, np.ndarray]:
        if dof != 1 or reference_embedding is not None:
            raise NotImplementedError("deepscope's t-SNE gradient handles dof=1 and new embeddings only")
        fft = {"n_interpolation_points": 3, "min_num_intervals": 50, "ints_in_interval": 1, **(fft_params or {})}
        if self.backend == "openTSNE":
            p_sum, error, z, gradient = self._compiled(embedding, P, fft, should_eval_error)
        else:
            p_sum, error, z, gradient = self._torch(embedding, P, fft, should_eval_error)
        # KL(P || q / z) = sum p log(p / q) + sum(p) log z; openTSNE undoes an exaggeration of P afterwards.
        return (error + p_sum * math.log(z) if should_eval_error else None), gradient

    def _compiled(
        self, embedding: np.ndarray, P: Any, fft: dict[str, Any], should_eval_error: bool
    ) -> tuple[float, float, float, np.ndarray]:
        from openTSNE import _tsne

        repulsive = np.zeros_like(embedding, dtype=np.float64)
        gradient = np.zeros_like(embedding, dtype=np.float64)
        if embedding.shape[1] == 1:
            function, points, out = _tsne.estimate_negative_gradient_fft_1d, embedding.ravel(), repulsive.ravel()
        else:
            function, points, out = _tsne.estimate_negative_gradient_fft_2d, embedding, repulsive
        if self.threads == 1:
            z = function(points, out, **fft, dof=1)
            p_sum, error = _openTSNE_attraction(P, embedding, gradient, 1, should_eval_error)
            return p_sum, error, float(z), gradient + repulsive

        # The repulsion takes one thread: it runs in a thread of its own, followed there by the attraction of the
        # first `split` rows, while the other threads sum the attraction of the rest. `split` balances the two from
        # the last iterations' times (the repulsion grows as the embedding spreads; early on it is the shorter).
        n = len(embedding)
        split = min(n - 1, int(self._worker_share * n))
        found: dict[str, Any] = {}

        def worker() -> None:
            started = time.perf_counter()
            found["z"] = function(points, out, **fft, dof=1)
            found["repel_s"] = time.perf_counter() - started
            if split > 0:
                found["head"] = _openTSNE_attraction(
                    _rows(P, 0, split), embedding[:split], gradient[:split], 1, should_eval_error, reference=embedding
                )

        thread = threading.Thread(target=worker, daemon=True)  # the compiled loops release the GIL
        thread.start()
        started = time.perf_counter()
        p_sum, error = _openTSNE_attraction(
            _rows(P, split, n),
            embedding[split:],
            gradient[split:],
            self.threads - 1,
            should_eval_error,
            reference=embedding,
        )
        attract_s = time.perf_counter() - started
        thread.join()
        if "z" not in found:
            raise RuntimeError("openTSNE's interpolated repulsion failed")
        if "head" in found:
            p_sum, error = p_sum + found["head"][0], error + found["head"][1]
        self._balance(found["repel_s"], attract_s, (n - split) / n)
        return p_sum, error, float(found["z"]), gradient + repulsive

    def _balance(self, repel_s: float, attract_s: float, main_fraction: float) -> None:
        """The worker's share of the attraction's rows that would make both sides finish together next time."""
        others = self.threads - 1
        # The whole attraction in one thread, estimated from the main side's time on its rows.
        whole = attract_s * others / max(main_fraction, 1e-3)
        # worker: repel + whole * f; main: whole * (1 - f) / others.
        share = (whole / others - repel_s) / (whole + whole / others)
        # Three quarters of it, smoothed: the worker is the critical path, so a share too large costs more than one
        # too small (the times are noisy, and the repulsion grows as the embedding spreads).
        self._worker_share = 0.7 * self._worker_share + 0.3 * min(max(0.75 * share, 0.0), 0.9)

    def _torch(
        self, embedding: np.ndarray, P: Any, fft: dict[str, Any], should_eval_error: bool
    ) -> tuple[float, float, float, np.ndarray]:
        # float32 is enough for the repulsion: the interpolation's own error (~1e-2) is far above its rounding.
        y = torch.from_numpy(np.asarray(embedding)).to(self.device)
        forces, z = repulsion(
            y.float(),
            interpolation_points=fft["n_interpolation_points"],
            min_intervals=fft["min_num_intervals"],
            interval=fft["ints_in_interval"],
        )
        attraction, p_sum, error = self._attraction(P, y.double(), should_eval_error)
        gradient = attraction - forces.double() / z.double()
        return p_sum, error, float(z), gradient.cpu().numpy()

    def _attraction(self, P: Any, y: Tensor, should_eval_error: bool) -> tuple[Tensor, float, float]:
        """``sum_j p_ij q_ij (y_i - y_j)`` in torch, with ``sum p`` and ``sum p log(p / q)``."""
        if self._structure is None or self._structure[0] is not P:
            rows = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
            self._structure = (
                P,
                torch.from_numpy(rows).to(y.device),
                torch.from_numpy(P.indices.astype(np.int64)).to(y.device),
            )
        _, rows, columns = self._structure
        p = torch.from_numpy(P.data).to(y.device, torch.float64)  # copied every call: openTSNE scales P in place
        difference = y[rows] - y[columns]
        q = 1.0 / (1.0 + (difference * difference).sum(dim=1))
        attraction = torch.zeros_like(y).index_add_(0, rows, (p * q)[:, None] * difference)
        error = float((p * torch.log(p.clamp(min=1e-300) / q)).sum()) if should_eval_error else 0.0
        return attraction, float(p.sum()), error


def _rows(P: Any, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of a CSR matrix as ``(indices, indptr, data)`` views (``indptr`` rebased, a copy)."""
    low, high = P.indptr[start], P.indptr[stop]
    return P.indices[low:high], P.indptr[start : stop + 1] - low, P.data[low:high]


def _openTSNE_attraction(
    P: Any,
    embedding: np.ndarray,
    gradient: np.ndarray,
    threads: int,
    should_eval_error: bool,
    reference: np.ndarray | None = None,
) -> tuple[float, float]:
    """Adds ``sum_j p_ij q_ij (y_i - y_j)`` to ``gradient`` for the rows of ``P`` (a CSR matrix, or its rows from
    :func:`_rows`) at the points ``embedding`` (the neighbours ``j`` are rows of ``reference``, by default the same
    points); returns ``sum p`` and ``sum p log(p / q)``."""
    from openTSNE import _tsne  # compiled; the same call openTSNE's own objective makes

    indices, indptr, data = P if isinstance(P, tuple) else (P.indices, P.indptr, P.data)
    p_sum, error = _tsne.estimate_positive_gradient_nn(
        indices,
        indptr,
        data,
        embedding,
        embedding if reference is None else reference,
        gradient,
        1,
        num_threads=threads,
        should_eval_error=should_eval_error,
    )
    return float(p_sum), float(error)
