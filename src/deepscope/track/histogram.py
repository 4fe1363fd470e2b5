"""A tensor's histogram and summary statistics, computed on the tensor's own device.

Only ``bins + 7`` numbers leave the device, in one transfer: the bin counts, the finite minimum and maximum, the
mean, the standard deviation, the L2 norm, the number of exact zeros and the number of finite values. On an
accelerator nothing in :func:`summarise` waits for the device, so a caller that summarises many tensors can stack
their packed rows and bring them all back with one transfer (as :class:`~deepscope.track.watch.Watcher` does).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from ..errors import BadInputError
from .records import Histogram, HistogramKind

STATS = 7  # after the bin counts: low, high, mean, std, norm, zeros, finite values

# Sums of squares run over rows of this many values, each accumulated by the kernel, and the row sums in float64:
# one float32 dot product over ten million values can be off by 0.1 %, the rows are not (about 1e-8).
_ROW = 4096
_CHUNK = 1 << 18  # values binned at a time on the CPU: 1 MiB of float32, which stays in cache


def summarise(tensor: Tensor, bins: int = 64) -> Tensor:
    """The packed summary of ``tensor``: a float64 row of ``bins + 7`` values on the tensor's device.

    Bins are uniform over ``[min, max]`` of the finite values; a value equal to the maximum falls in the last bin,
    and a constant tensor has all its values in the first bin. Non-finite values (NaN, ±inf) are left out of the
    bins and the statistics, and counted. Half-precision, integer and bool tensors are read in float32.
    """
    x = tensor.detach().reshape(-1)
    if x.dtype != torch.float64:
        x = x.float()
    x = x.contiguous()
    if x.numel() == 0:
        return torch.zeros(bins + STATS, dtype=torch.float64, device=x.device)
    if x.device.type == "cpu":
        return _on_host(x, bins)
    return _on_device(x, bins)


def _on_host(x: Tensor, bins: int) -> Tensor:
    """The CPU path: asking the tensor for a number costs nothing here, so it takes the cheapest kernels."""
    low, high = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(low) and math.isfinite(high)):
        # NaN or ±inf somewhere: summarise the finite values; the caller counts the rest from the total.
        kept = x[torch.isfinite(x)]
        return _on_host(kept, bins) if kept.numel() else torch.zeros(bins + STATS, dtype=torch.float64)
    n = x.numel()
    mean = float(x.sum()) / n
    squares = float(_sum_squares(x))
    if high == low:
        variance = 0.0
        counts = torch.zeros(bins, dtype=torch.float64)
        counts[0] = n
    else:
        variance = squares / n - mean * mean
        if variance <= 1e-3 * squares / n:
            # The shortcut cancels when the mean is large against the spread: take the two-pass variance.
            variance = float(torch.var(x, correction=0))
        counts = _bin_counts(x, bins, low, high).to(torch.float64)
    zeros = n - int(torch.count_nonzero(x))
    stats = [low, high, mean, math.sqrt(max(variance, 0.0)), math.sqrt(squares), zeros, n]
    return torch.cat([counts, torch.tensor(stats, dtype=torch.float64)])


def _bin_counts(x: Tensor, bins: int, low: float, high: float) -> Tensor:
    """Bin counts over ``[low, high]`` of a CPU tensor whose values all lie in that range.

    The bin indices are computed a chunk at a time in two small buffers used again for every chunk: a fresh
    buffer the size of a large tensor costs more in page faults than the arithmetic, and this runs about four
    times faster than ``torch.histc`` on one thread.
    """
    scale = bins / (high - low)
    size = min(x.numel(), _CHUNK)
    scratch = torch.empty(size, dtype=x.dtype)
    index = torch.empty(size, dtype=torch.uint8 if bins <= 256 else torch.int64)
    counts = torch.zeros(bins, dtype=torch.int64)
    for start in range(0, x.numel(), _CHUNK):
        part = x[start : start + _CHUNK]
        values = scratch[: part.numel()]
        torch.sub(part, low, out=values).mul_(scale).clamp_(0, bins - 1)
        chunk_index = index[: part.numel()]
        chunk_index.copy_(values)  # the conversion truncates, which is the floor for values >= 0
        counts += torch.bincount(chunk_index, minlength=bins)
    return counts


def _on_device(x: Tensor, bins: int) -> Tensor:
    """The accelerator path: no value leaves the device, and nothing waits for it.

    Non-finite values are masked out of every reduction rather than removed, since removing them would need their
    number on the host first; on an accelerator the extra passes cost less than that round trip.
    """
    finite = torch.isfinite(x)
    finite_count = finite.sum()
    inf = torch.tensor(math.inf, dtype=x.dtype, device=x.device)
    low = torch.where(finite, x, inf).amin()
    high = torch.where(finite, x, -inf).amax()
    clean = torch.where(finite, x, 0.0)
    mean = clean.sum() / finite_count
    # Two passes (the mean first) keep the variance right for tensors whose mean is large against their spread.
    variance = torch.where(finite, x - mean, 0.0).square().sum() / finite_count
    norm = _sum_squares(clean).sqrt()
    zeros = (x == 0).sum()
    width = high - low
    scale = torch.where(width > 0, bins / width, 0.0)
    index = ((x - low) * scale).floor_().clamp_(0, bins - 1).long()
    index = torch.where(finite, index, bins)  # an extra bin for non-finite values, dropped below
    counts = torch.bincount(index, minlength=bins + 1)[:bins]
    stats = torch.stack([low, high, mean, variance.sqrt(), norm]).to(torch.float64)
    return torch.cat([counts.to(torch.float64), stats, torch.stack([zeros, finite_count]).to(torch.float64)])


def _sum_squares(x: Tensor) -> Tensor:
    rows = x.numel() // _ROW
    head = x[: rows * _ROW].view(rows, _ROW)
    tail = x[rows * _ROW :]
    return torch.linalg.vector_norm(head, dim=1).double().square().sum() + tail.double().square().sum()


def unpack(
    row: np.ndarray,
    *,
    count: int,
    tag: str,
    step: int,
    layer: str = "",
    kind: HistogramKind = "other",
    wall_time: float | None = None,
) -> Histogram:
    """The :class:`Histogram` that a packed row from :func:`summarise`, brought to the host, describes."""
    bins = len(row) - STATS
    counts = np.rint(row[:bins]).astype(np.int64)
    low, high, mean, std, norm, zeros, finite = (float(v) for v in row[bins:])
    finite_count = round(finite)
    if finite_count == 0:
        # No finite value: the range means nothing, and the mean and spread of no values are undefined.
        low = high = norm = 0.0
        mean = std = math.nan
    return Histogram(
        tag=tag,
        step=step,
        low=low,
        high=high,
        counts=counts,
        layer=layer,
        kind=kind,
        mean=mean,
        std=std,
        zero_fraction=zeros / count if count else math.nan,
        norm=norm,
        count=count,
        nonfinite=count - finite_count,
        wall_time=time.time() if wall_time is None else wall_time,
    )


def histogram(
    tensor: Tensor,
    bins: int = 64,
    *,
    tag: str = "",
    layer: str = "",
    kind: HistogramKind = "other",
    step: int = 0,
) -> Histogram:
    """The distribution of ``tensor``'s values as a :class:`Histogram`, computed where the tensor lives.

    Args:
        tensor: any tensor (floating point of any precision, integer or bool); it is not changed.
        bins: the number of uniform bins between the finite minimum and maximum.
        tag, layer, kind, step: copied into the record.

    Returns:
        A record whose ``counts`` sum to the number of finite values, and whose ``low``/``high`` are their minimum
        and maximum (equal for a constant tensor, whose values all sit in the first bin; both 0 when no value is
        finite). ``mean``, ``std`` (population) and ``norm`` (L2) are over the finite values; ``zero_fraction`` is
        the share of exact zeros among all ``count`` values; ``nonfinite`` counts NaN and ±inf.
    """
    if not isinstance(tensor, Tensor):
        raise BadInputError(f"histogram() takes a torch.Tensor, not a {type(tensor).__name__}.")
    check_bins(bins)
    row = summarise(tensor, bins).cpu().numpy()
    return unpack(row, count=tensor.numel(), tag=tag, step=step, layer=layer, kind=kind)


def check_bins(bins: int) -> None:
    """Raise :class:`BadInputError` unless ``bins`` is a positive whole number."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise BadInputError(f"bins={bins!r}: pass a positive whole number of bins, e.g. 64.")
