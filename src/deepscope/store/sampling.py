"""Choosing few points or records of many: what the reader shows of a long series, the same for every backend."""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points that keep the shape of a series, ascending.

    The step range is cut into equal buckets; each keeps its lowest and highest value (infinities included), its
    first NaN if it has one, and the series keeps its first and last points. A spike therefore survives any
    zoom level, unlike with averaging or striding. ``steps`` need not be sorted (a restarted loop).

    Args:
        steps: int ``[n]``.
        values: float ``[n]``.
        max_points: at least 4.
    """
    n = len(steps)
    if max_points < 4:
        raise BadInputError(f"max_points must be at least 4, not {max_points}")
    if n <= max_points:
        return np.arange(n)
    nan = np.isnan(values)
    buckets = max(1, (max_points - 2) // (3 if nan.any() else 2))
    order = None
    if (np.diff(steps) < 0).any():
        order = np.argsort(steps, kind="stable")
        steps, values, nan = steps[order], values[order], nan[order]
    low, high = int(steps[0]), int(steps[-1])
    span = high - low + 1
    bucket = ((steps - low).astype(np.float64) * (buckets / span)).astype(np.int64)
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    sizes = np.diff(starts, append=n)
    kept = np.zeros(n, dtype=bool)  # a mask, not np.unique of the indices: O(n), no sort or hash
    kept[[0, n - 1]] = True
    for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        filled = np.where(nan, fill, values)
        extreme = reduce.reduceat(filled, starts)
        hit = np.flatnonzero(filled == np.repeat(extreme, sizes))
        kept[_first_of_each_bucket(hit, bucket)] = True
    if nan.any():
        kept[_first_of_each_bucket(np.flatnonzero(nan), bucket)] = True
    indices = np.flatnonzero(kept)
    return indices if order is None else np.sort(order[indices])


def spread(n: int, count: int) -> np.ndarray:
    """``count`` indices into ``n`` items (all of them if ``n <= count``), evenly spaced, first and last included.

    With ``n > count >= 2`` consecutive indices lie more than one apart before rounding, so none repeats.
    """
    if n <= count:
        return np.arange(n)
    return np.linspace(0, n - 1, count).round().astype(np.int64)


def _first_of_each_bucket(where: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """The first of the ascending indices ``where`` in each bucket (``bucket`` is non-decreasing along the series)."""
    of = bucket[where]
    return where[np.flatnonzero(np.diff(of, prepend=-1))]
