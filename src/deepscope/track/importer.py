"""Import a TensorBoard log directory into the store: one :class:`deepscope.Run` per directory of event files.

>>> from deepscope.track.importer import import_tensorboard
>>> import_tensorboard("tb_logs", "runs")  # [PosixPath('runs/exp1'), PosixPath('runs/exp2')]

The event files are read with TensorBoard's own ``EventAccumulator`` (``pip install tensorboard``), keeping every
point. What is imported:

- scalars (the summaries of ``add_scalar`` and TF2's scalar tensors), all points with their steps and wall times;
- histograms (``add_histogram``, TF2's histogram tensors), re-binned into the store's uniform bins, see
  :func:`uniform_counts`;
- images (decoded to pixels, stored as PNG as ``Run`` stores images), text and PR curves.

Graphs, audio, hyperparameters, embeddings (projector files) and other plugins' data are left out, with a warning
naming the tags.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, StoreError
from .records import Histogram, Image, PRCurve, Text
from .run import Run

BINS = 64  # uniform bins of an imported histogram (Run.watch's default too)
_EVENTS = "events.out.tfevents"


def import_tensorboard(logdir: str | os.PathLike[str], root: str | os.PathLike[str]) -> list[Path]:
    """Import every TensorBoard run under ``logdir`` into new runs under ``root``; returns their paths.

    Each directory holding event files becomes one run. Its name is its path relative to ``logdir`` with ``/``
    written as ``-`` (``exp1/lr_0.1`` -> ``root/exp1-lr_0.1``), or ``logdir``'s own name for event files directly
    in ``logdir``. Every target is checked before anything is written: none may exist already.

    Raises:
        BadInputError: ``logdir`` is not a directory or holds no event files.
        StoreError: a target run already exists (nothing is written then), or a run cannot be written.
        ImportError: tensorboard is not installed.
    """
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        raise ImportError("importing TensorBoard logs needs the tensorboard package: pip install tensorboard") from e
    source = Path(logdir)
    if not source.is_dir():
        raise BadInputError(f"{source} is not a directory; give the TensorBoard log directory (its --logdir)")
    directories = sorted({path.parent for path in source.rglob(f"{_EVENTS}*") if path.is_file()})
    if not directories:
        raise BadInputError(
            f"{source} holds no TensorBoard event files ({_EVENTS}.*), in it or below; nothing to import"
        )
    target_root = Path(root)
    targets = [target_root / _run_name(source, directory) for directory in directories]
    taken = [str(t) for t in targets if t.exists() and (t.is_file() or any(t.iterdir()))]
    duplicated = sorted({str(t) for t in targets if targets.count(t) > 1})
    if taken or duplicated:
        problem = f"already exist: {', '.join(taken)}" if taken else f"would be made twice: {', '.join(duplicated)}"
        raise StoreError(
            f"cannot import {source}: these runs {problem}. Nothing was written; import into another --into "
            "directory, or remove those runs first"
        )
    imported = []
    for directory, target in zip(directories, targets, strict=True):
        accumulator = event_accumulator.EventAccumulator(
            str(directory), size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE
        )
        accumulator.Reload()
        with Run(target, config={"imported_from": str(directory.resolve())}) as run:
            skipped = _import_run(accumulator, run)
        if skipped:
            warnings.warn(
                f"{directory}: not imported (a kind deepscope does not import): {', '.join(sorted(skipped))}",
                UserWarning,
                stacklevel=2,
            )
        imported.append(target)
    return imported


def _run_name(source: Path, directory: Path) -> str:
    relative = directory.relative_to(source)
    return source.resolve().name if relative == Path(".") else "-".join(relative.parts)


def _import_run(accumulator: Any, run: Run) -> list[str]:
    """Log what ``accumulator`` holds into ``run``; returns the tags left out."""
    from tensorboard.util import tensor_util

    tags = accumulator.Tags()
    for tag in tags.get("scalars", []):
        events = accumulator.Scalars(tag)
        run.log_series(
            tag,
            np.array([e.step for e in events], dtype=np.int64),
            [e.value for e in events],
            wall_times=[e.wall_time for e in events],
        )
    for tag in tags.get("histograms", []):
        records = []
        for event in accumulator.Histograms(tag):
            value = event.histogram_value
            limits = np.asarray(value.bucket_limit, dtype=np.float64)
            lower = np.concatenate(([-math.inf], limits[:-1]))
            records.append(
                _histogram(tag, event.step, event.wall_time, lower, limits, value.bucket, value.min, value.max)
                | _moments(value.num, value.sum, value.sum_squares)
            )
        run.log_records(Histogram(**fields) for fields in records)
    for tag in tags.get("images", []):
        run.log_records(
            Image(tag, e.step, _decode(e.encoded_image_string, tag), wall_time=e.wall_time)
            for e in accumulator.Images(tag)
        )
    # "distributions" are the accumulator's compressed view of the same histograms (imported above), not data of
    # their own: only a distribution without its histogram would be left out.
    histograms = set(tags.get("histograms", []))
    skipped = [f"{tag} (audio)" for tag in tags.get("audio", [])]
    skipped += [f"{tag} (distribution)" for tag in tags.get("distributions", []) if tag not in histograms]
    skipped += ["graph"] if tags.get("graph") else []
    for tag in tags.get("tensors", []):
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        events = accumulator.Tensors(tag)
        arrays = [(e, tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        if plugin == "scalars":
            run.log_series(
                tag,
                np.array([e.step for e, _ in arrays], dtype=np.int64),
                [float(a.reshape(())) for _, a in arrays],
                wall_times=[e.wall_time for e, _ in arrays],
            )
        elif plugin == "histograms":
            run.log_records(Histogram(**fields) for fields in _tensor_histograms(tag, arrays))
        elif plugin == "text":
            name = tag.removesuffix("/text_summary")  # what torch's add_text appends to the tag
            run.log_records(Text(name, _text(a), step=e.step, wall_time=e.wall_time) for e, a in arrays)
        elif plugin == "pr_curves":
            run.log_records(_pr_curve(tag, e.step, e.wall_time, a) for e, a in arrays)
        else:
            skipped.append(f"{tag} ({plugin or 'tensor'})")
    return [tag for tag in skipped if tag]


def _tensor_histograms(tag: str, arrays: list[tuple[Any, np.ndarray]]) -> Iterator[dict[str, Any]]:
    """TF2 histograms: ``[k, 3]`` arrays of bucket left edge, right edge and count."""
    for event, array in arrays:
        buckets = array.reshape(-1, 3).astype(np.float64)
        counts = buckets[:, 2]
        filled = buckets[counts > 0]
        low = float(filled[:, 0].min()) if len(filled) else 0.0
        high = float(filled[:, 1].max()) if len(filled) else 0.0
        fields = _histogram(tag, event.step, event.wall_time, buckets[:, 0], buckets[:, 1], counts, low, high)
        centres = (buckets[:, 0] + buckets[:, 1]) / 2  # the exact sums are not stored: estimate from the centres
        total = counts.sum()
        yield fields | _moments(total, float(centres @ counts), float((centres**2) @ counts))


def uniform_counts(
    lower: np.ndarray, upper: np.ndarray, counts: np.ndarray, low: float, high: float, bins: int = BINS
) -> np.ndarray:
    """Counts of buckets ``(lower[i], upper[i]]`` spread over ``bins`` uniform bins from ``low`` to ``high``.

    TensorBoard's buckets are not uniform (exponentially growing by default); the store's are. Each bucket is
    clipped to ``[low, high]`` (the exact minimum and maximum TensorBoard keeps) and its count shared among the
    bins it overlaps in proportion to the overlap, i.e. values are taken as uniformly spread inside a bucket. The
    counts are therefore floats; they sum to the buckets' total. A bucket of zero width (or a constant tensor)
    falls into the bin holding its position.
    """
    counts = np.asarray(counts, dtype=np.float64)
    result = np.zeros(bins, dtype=np.float64)
    if not high > low:
        result[0] = counts.sum()
        return result
    a = np.clip(np.asarray(lower, dtype=np.float64), low, high)
    b = np.clip(np.asarray(upper, dtype=np.float64), low, high)
    edges = np.linspace(low, high, bins + 1)
    width = b - a
    wide = (width > 0) & (counts > 0)
    overlap = np.clip(np.minimum(b[wide, None], edges[None, 1:]) - np.maximum(a[wide, None], edges[None, :-1]), 0, None)
    result += (overlap / width[wide, None] * counts[wide, None]).sum(axis=0)
    narrow = ~wide & (counts > 0)
    where = np.clip(((a[narrow] - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
    np.add.at(result, where, counts[narrow])
    return result


def _histogram(
    tag: str, step: int, wall: float, lower: np.ndarray, upper: np.ndarray, counts: Any, low: float, high: float
) -> dict[str, Any]:
    counts = np.asarray(counts, dtype=np.float64)
    return {
        "tag": tag,
        "step": int(step),
        "low": float(low),
        "high": float(high),
        "counts": uniform_counts(lower, upper, counts, float(low), float(high)),
        "wall_time": float(wall),
    }


def _moments(count: float, total: float, squares: float) -> dict[str, Any]:
    """Mean, population std and L2 norm from TensorBoard's count, sum and sum of squares (zeros are unknown)."""
    if count <= 0:
        return {"count": 0, "mean": math.nan, "std": math.nan, "norm": 0.0}
    mean = total / count
    return {
        "count": round(count),
        "mean": mean,
        "std": math.sqrt(max(squares / count - mean * mean, 0.0)),
        "norm": math.sqrt(max(squares, 0.0)),
    }


def _decode(encoded: bytes, tag: str) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(encoded)) as opened:
            image = (
                opened
                if opened.mode in ("L", "RGB", "RGBA")
                else opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
            )
            return np.asarray(image)
    except OSError as e:
        raise StoreError(f"an image of {tag!r} in the event file cannot be decoded: {e}") from e


def _text(array: np.ndarray) -> str:
    cells = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    if array.ndim < 2:
        return "\n".join(cells)
    width = array.shape[-1]
    return "\n".join(" | ".join(cells[i : i + width]) for i in range(0, len(cells), width))


def _pr_curve(tag: str, step: int, wall: float, array: np.ndarray) -> PRCurve:
    """TensorBoard's PR-curve tensor: rows tp, fp, tn, fn, precision, recall over evenly spaced thresholds."""
    tp, fp, tn, fn, precision, recall = array.astype(np.float64)
    n = len(tp)
    thresholds = np.arange(n) / max(n - 1, 1)
    return PRCurve(tag, int(step), thresholds, tp, fp, tn, fn, precision, recall, wall_time=float(wall))


__all__ = ["import_tensorboard", "uniform_counts"]
