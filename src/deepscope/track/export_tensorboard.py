"""Export a deepscope run as TensorBoard event files (the reverse of :mod:`deepscope.track.importer`).

>>> from deepscope.track.export_tensorboard import export_tensorboard
>>> export_tensorboard("runs/exp1", "tb_logs/exp1")  # then: tensorboard --logdir tb_logs

The event files are written with torch's TensorBoard writer (``torch.utils.tensorboard``: its ``FileWriter`` and
``summary`` functions), which needs the tensorboard package (``pip install 'deepscope[tensorboard]'``). Every
record keeps its step and wall time. What TensorBoard has no summary for (graphs in deepscope's form, embeddings,
confusion matrices, explanations, evaluation curves) is left out with one warning naming the tags.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..store import Reader
from .records import Histogram, Image, PRCurve, Video

_EVENTS = "events.out.tfevents."


def export_tensorboard(run: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, str]:
    """Write the run at ``run`` as TensorBoard event files into the directory ``out``; returns ``{tag: kind}`` of
    what was exported.

    Exported: scalars (TensorBoard keeps float32), histograms (our uniform bins as TensorBoard's buckets, with the
    exact count, min, max, sum and sum of squares), images, figures and clips (a clip as its animated GIF, as
    TensorBoard stores videos), text, PR curves, mono sounds, and the custom-scalars layout. ``out`` may exist but
    must not hold event files already.

    Raises:
        StoreError: ``run`` is not a readable deepscope run.
        BadInputError: ``out`` is a file, or already holds event files (nothing is written then).
        ImportError: tensorboard is not installed.
    """
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import summary
        from torch.utils.tensorboard.writer import FileWriter
    except ImportError as e:
        raise ImportError(
            "exporting to TensorBoard needs the tensorboard package: pip install 'deepscope[tensorboard]'"
        ) from e
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise BadInputError(f"{target} is a file; give a directory for the event files")
    if target.is_dir() and any(p.name.startswith(_EVENTS) for p in target.iterdir()):
        raise BadInputError(
            f"{target} already holds TensorBoard event files; nothing was written. Choose a new directory"
        )

    def video(record: Video) -> Any:
        from PIL import Image as PILImage

        frames = [PILImage.fromarray(frame) for frame in record.frames]
        buffer = io.BytesIO()
        duration = max(20, round(1000 / record.fps / 10) * 10)
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0)
        height, width = record.frames.shape[1:3]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
        return Summary(value=[Summary.Value(tag=record.tag, image=image)])

    def histogram(record: Histogram) -> Any:
        edges = np.linspace(record.low, record.high, len(record.counts) + 1)
        total = record.mean * record.count if record.count else 0.0
        return summary.histogram_raw(
            record.tag,
            min=record.low,
            max=record.high,
            num=record.count,
            sum=total,
            sum_squares=record.norm**2 if record.count else 0.0,
            bucket_limits=edges[1:].tolist(),
            bucket_counts=np.asarray(record.counts, dtype=np.float64).tolist(),
        )

    def image(record: Image) -> Any:
        return summary.image(record.tag, record.pixels, dataformats="HW" if record.pixels.ndim == 2 else "HWC")

    def pr_curve(record: PRCurve) -> Any:
        counts = (record.tp, record.fp, record.tn, record.fn, record.precision, record.recall)
        return summary.pr_curve_raw(record.tag, *counts, num_thresholds=len(record.thresholds))

    converters: dict[str, Callable[[Any], Any]] = {
        "histogram": histogram,
        "image": image,
        "video": video,
        "text": lambda record: summary.text(record.tag, record.text),
        "pr_curve": pr_curve,
        "audio": lambda record: summary.audio(record.tag, record.samples[:, 0], sample_rate=record.sample_rate),
        "custom_scalars": lambda record: summary.custom_scalars(record.layout),
    }
    exported: dict[str, str] = {}
    left_out: list[str] = []
    with Reader(run) as reader:
        tags = reader.tags()
        target.mkdir(parents=True, exist_ok=True)
        writer = FileWriter(str(target))
        try:
            for tag, kind in tags.items():
                if kind == "scalar":
                    series = reader.scalars(tag)
                    for step, value, wall in zip(series.steps.tolist(), series.values.tolist(), series.wall_times):
                        writer.add_summary(summary.scalar(tag, value), step, float(wall))
                elif kind in converters:
                    records = reader.records(tag)
                    if kind == "audio" and any(r.samples.shape[1] != 1 for r in records):  # type: ignore[union-attr]
                        left_out.append(f"{tag} (audio with several channels: TensorBoard's is mono)")
                        continue
                    for record in records:
                        writer.add_summary(converters[kind](record), record.step, record.wall_time)  # type: ignore[union-attr]
                else:
                    left_out.append(f"{tag} ({kind})")
                    continue
                exported[tag] = kind
        finally:
            writer.close()
    if left_out:
        warnings.warn(
            f"not exported to TensorBoard (it has no summary for them): {', '.join(left_out)}",
            UserWarning,
            stacklevel=2,
        )
    return exported


__all__ = ["export_tensorboard"]
