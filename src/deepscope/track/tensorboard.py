"""A drop-in for ``torch.utils.tensorboard.SummaryWriter`` that logs into a :class:`deepscope.Run`.

>>> from deepscope.track.tensorboard import SummaryWriter  # was: from torch.utils.tensorboard import SummaryWriter
>>> writer = SummaryWriter("runs/exp1")
>>> writer.add_scalar("train/loss", loss, global_step=step)

Every ``add_*`` call turns into the records of :mod:`deepscope.track.records`, logged with
:meth:`deepscope.Run.log` / :meth:`~deepscope.Run.log_records`; nothing here writes to disk by itself. The
methods keep TensorBoard's names, argument names and defaults. Where the meaning differs, or an argument is
accepted but has no effect, the method's docstring says so (and ``docs/tracking.md`` lists them all).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import BadInputError, NotSupportedError
from ..store import schema
from ..store.records.layout import scalar_layout
from .histogram import check_bins, histogram
from .records import Audio, Embedding, Image, PRCurve, Scalar, Text, Video
from .run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_BINS = 64  # TensorBoard's "tensorflow" buckets are exponential; ours are uniform (see add_histogram)
GRID_COLUMNS = 8  # add_images tiles a batch into one image, 8 per row, as TensorBoard does

# TensorBoard methods this drop-in does not have, and what to use instead, so that calling one says so (a
# NotSupportedError, which is an AttributeError: hasattr answers False) instead of a bare AttributeError.
_UNSUPPORTED = {
    "add_mesh": "log pictures of the mesh with add_image or add_figure, or keep torch.utils.tensorboard for meshes",
    "add_onnx_graph": "log the model's graph with add_graph(model, input_to_model)",
    "add_histogram_raw": "give the values themselves to add_histogram(tag, values)",
    "add_tensor": "log numbers with add_scalar, or arrays with add_histogram or writer.run.log_records",
}


class SummaryWriter:
    """TensorBoard's ``SummaryWriter``, writing a deepscope run (``self.run``) instead of event files.

    Args:
        log_dir: the run's directory. ``None``: ``runs/<date>_<host><comment>``, as TensorBoard. A directory that
            already holds a deepscope run is added to (TensorBoard appends a new event file); a directory of
            TensorBoard event files is refused (import it with :func:`deepscope.track.importer.import_tensorboard`).
        comment: appended to the default ``log_dir``; ignored when ``log_dir`` is given (as TensorBoard).
        purge_step: not supported: anything but ``None`` is an error (a run never drops what it holds).
        max_queue: no effect; the run's writer batches by time and size (``Run(max_pending=...)``).
        flush_secs: the longest time a value waits before it is on disk. Default 2 (TensorBoard: 120).
        filename_suffix: no effect (there are no event files).

    Steps: ``global_step=None`` means step 0, as in TensorBoard (``Run.log`` would continue the tag's count).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: float = 2,
        filename_suffix: str = "",
    ) -> None:
        if purge_step is not None:
            raise BadInputError(
                "SummaryWriter(purge_step=...) is not supported: a deepscope run never drops stored points. Log to "
                "a new log_dir instead, or read only the steps you want (Reader.scalars(tag, start, end))."
            )
        if log_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join(schema.RUNS_DIR, f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = os.fspath(log_dir)
        resume = (Path(self.log_dir) / schema.DB_NAME).is_file()
        self.run = Run(self.log_dir, resume=resume, flush_interval=float(flush_secs))
        self._clipped_tags: set[str] = set()  # tags whose values were clipped: warned once each
        self._layout: dict[str, dict[str, list[Any]]] = {}  # the custom-scalars layout logged so far

    def get_logdir(self) -> str:
        """The run's directory."""
        return self.log_dir

    # ---- scalars ------------------------------------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """One scalar. ``new_style`` and ``double_precision`` have no effect: values are always kept as float64."""
        step = _step(global_step)
        if walltime is None:
            self.run.log({tag: scalar_value}, step=step)
        else:
            self.run.log_records([Scalar(tag, scalar_value, step, wall_time=float(walltime))])

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several scalars, stored under the tags ``main_tag/key`` of this run.

        TensorBoard writes each key into its own run (a subdirectory ``main_tag_key``) under the tag ``main_tag``;
        here they stay in one run, so that they are read and drawn together.
        """
        if not isinstance(tag_scalar_dict, Mapping):
            raise BadInputError(f"add_scalars takes a dict of name to value, not {type(tag_scalar_dict).__name__}")
        values = {f"{main_tag}/{key}": value for key, value in tag_scalar_dict.items()}
        step = _step(global_step)
        if walltime is None:
            self.run.log(values, step=step)
        else:
            self.run.log_records([Scalar(tag, v, step, wall_time=float(walltime)) for tag, v in values.items()])

    # ---- distributions ------------------------------------------------------------------------------------------

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: int | str = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """The distribution of ``values`` (tensor, array or list), computed where the tensor lives.

        The bins are uniform between the minimum and maximum (:func:`deepscope.track.histogram.histogram`, as
        ``Run.watch`` uses), with mean, std, norm and the share of zeros of all values. ``bins``: a whole number
        of bins, or any string (TensorBoard's ``"tensorflow"`` or a NumPy rule such as ``"auto"``), which means 64
        uniform bins. ``max_bins`` caps the number of bins.
        """
        tensor = _tensor(values, "add_histogram")
        if isinstance(bins, str):
            count = DEFAULT_BINS
        else:
            check_bins(bins)
            count = bins
        if max_bins is not None:
            check_bins(max_bins)
            count = min(count, max_bins)
        record = histogram(tensor, count, tag=tag, step=_step(global_step))
        if walltime is not None:
            record = _with_wall(record, walltime)
        self.run.log_records([record])

    def add_pr_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """A precision-recall curve of binary ``labels`` (0/1 or bool) against ``predictions`` in [0, 1].

        Thresholds are ``i / (num_thresholds - 1)``; counts and rates follow TensorBoard's definition (see
        :func:`pr_curve`), so the stored curve equals TensorBoard's.
        """
        record = pr_curve(
            tag, labels, predictions, step=_step(global_step), num_thresholds=num_thresholds, weights=weights
        )
        if walltime is not None:
            record = _with_wall(record, walltime)
        self.run.log_records([record])

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: Any,
        false_positive_counts: Any,
        true_negative_counts: Any,
        false_negative_counts: Any,
        precision: Any,
        recall: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """A precision-recall curve from counts already computed, one per threshold ``i / (num_thresholds - 1)``.

        ``weights`` has no effect (as in TensorBoard, where it is unused too).
        """
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
            raise BadInputError(f"num_thresholds must be a whole number >= 2, not {num_thresholds!r}")
        given = {
            "tp": true_positive_counts,
            "fp": false_positive_counts,
            "tn": true_negative_counts,
            "fn": false_negative_counts,
            "precision": precision,
            "recall": recall,
        }
        arrays = {
            name: _tensor(values, f"add_pr_curve_raw({name})").detach().cpu().numpy().astype(np.float64).reshape(-1)
            for name, values in given.items()
        }
        if {a.size for a in arrays.values()} != {num_thresholds}:
            raise BadInputError(
                f"{tag!r}: add_pr_curve_raw needs {num_thresholds} values (num_thresholds) in each of the six arrays, "
                f"not {[a.size for a in arrays.values()]}"
            )
        thresholds = np.arange(num_thresholds) / (num_thresholds - 1)
        wall = None if walltime is None else float(walltime)
        self.run.log_records([PRCurve(tag, _step(global_step), thresholds, wall_time=wall, **arrays)])

    # ---- custom scalars -----------------------------------------------------------------------------------------

    def add_custom_scalars(self, layout: Mapping[str, Mapping[str, Sequence[Any]]]) -> None:
        """How the board's Scalars view groups tags into charts, above its per-tag charts (TensorBoard's layout).

        ``layout`` is ``{category: {chart title: ["Multiline", [tag regex, ...]]}}`` (every scalar tag a regex
        finds, in one chart) or ``["Margin", [value, lower, upper]]`` (the tag ``value`` with a band between the
        tags ``lower`` and ``upper``). Stored as a :class:`~deepscope.track.records.ScalarLayout`; a later layout
        replaces an earlier one.
        """
        self._layout = scalar_layout("custom_scalars", layout)
        self.run.add_custom_scalars(self._layout)

    def add_custom_scalars_multilinechart(
        self, tags: Sequence[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """One multiline chart of ``tags`` (regexes) added to the layout (TensorBoard: a layout of this chart
        alone; here the charts added so far stay)."""
        self._add_chart(category, title, ["Multiline", list(tags)])

    def add_custom_scalars_marginchart(
        self, tags: Sequence[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """One margin chart of ``tags`` = ``[value, lower, upper]`` added to the layout (see
        :meth:`add_custom_scalars_multilinechart`)."""
        self._add_chart(category, title, ["Margin", list(tags)])

    def _add_chart(self, category: str, title: str, chart: list[Any]) -> None:
        layout = {name: dict(charts) for name, charts in self._layout.items()}
        layout.setdefault(category, {})[title] = chart
        self.add_custom_scalars(layout)

    # ---- images, text, embeddings -------------------------------------------------------------------------------

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """One image: ``dataformats`` names the axes of ``img_tensor`` (``"CHW"``, ``"HWC"``, ``"HW"``, ...).

        Pixels are uint8, or floats in [0, 1] (rounded to the nearest of 256 levels). Floats outside [0, 1] (a
        normalised image) are clipped to it, as TensorBoard does, with one warning per tag. One channel is stored
        as a grey image.
        """
        pixels = _grid(_nchw(img_tensor, dataformats, "add_image"))
        self._image(tag, self._clipped(tag, pixels), global_step, walltime)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """A batch of images, tiled into one image 8 per row (black where the last row is short), as TensorBoard.
        Floats outside [0, 1] are clipped, as in :meth:`add_image`."""
        pixels = _grid(_nchw(img_tensor, dataformats, "add_images"))
        self._image(tag, self._clipped(tag, pixels), global_step, walltime)

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor: Any,
        box_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        rescale: float = 1,
        dataformats: str = "CHW",
        labels: Sequence[str] | None = None,
    ) -> None:
        """One image with boxes drawn on it in red: ``box_tensor`` ``[N, 4]`` holds ``x0, y0, x1, y1`` in pixels.

        ``labels`` (optional, one per box) are written in each box's top-left corner. ``rescale`` resizes the image
        (and its boxes) before drawing. Stored as an :class:`~deepscope.track.records.Image` (RGB).
        """
        images = _nchw(img_tensor, dataformats, "add_image_with_boxes")
        if images.shape[0] != 1:
            raise BadInputError(f"add_image_with_boxes takes one image, not {images.shape[0]} (shape as NCHW)")
        boxes = _tensor(box_tensor, "add_image_with_boxes(box_tensor=...)").detach().cpu().numpy().astype(np.float64)
        if boxes.ndim == 1 and boxes.size == 4:
            boxes = boxes[np.newaxis]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise BadInputError(f"add_image_with_boxes: boxes are [N, 4] finite x0, y0, x1, y1, not {boxes.shape}")
        if labels is not None and (isinstance(labels, str) or len(labels) != len(boxes)):
            raise BadInputError(f"add_image_with_boxes: give one label per box ({len(boxes)}), or labels=None")
        if isinstance(rescale, bool) or not isinstance(rescale, int | float) or not rescale > 0:
            raise BadInputError(f"add_image_with_boxes: rescale is a positive number, not {rescale!r}")
        pixels = _uint8(self._clipped(tag, _grid(images)))
        self._image(tag, boxed(pixels, boxes * rescale, labels, rescale), global_step, walltime)

    def add_figure(
        self,
        tag: str,
        figure: Figure | list[Figure],
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """A matplotlib figure (or a list of them, tiled 8 per row as :meth:`add_images`) as an RGB image.

        The figure is drawn with matplotlib's Agg renderer on its own canvas; the pyplot backend is left alone.
        ``close=True`` closes the figure in pyplot, as TensorBoard does, only where pyplot is already imported
        (a ``matplotlib.figure.Figure`` made without pyplot needs no closing).
        """
        figures = list(figure) if isinstance(figure, list | tuple) else [figure]
        if not figures:
            raise BadInputError("add_figure: give a matplotlib Figure, or a non-empty list of them")
        pictures = [figure_pixels(f) for f in figures]
        if len({p.shape for p in pictures}) != 1:
            raise BadInputError(
                f"add_figure: the figures of a list must have one size, not {sorted({p.shape for p in pictures})}"
            )
        self._image(tag, _grid(np.stack(pictures).transpose(0, 3, 1, 2)), global_step, walltime)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if close and pyplot is not None:
            for f in figures:
                pyplot.close(f)

    def add_audio(
        self,
        tag: str,
        snd_tensor: Any,
        global_step: int | None = None,
        sample_rate: int = 44100,
        walltime: float | None = None,
    ) -> None:
        """A sound: ``snd_tensor`` ``[L]`` or ``[channels, L]`` (TensorBoard: ``[1, L]``), samples in [-1, 1].

        Samples outside [-1, 1] are clipped, as TensorBoard does, with one warning per tag. Stored as a 16-bit
        PCM WAV file (:class:`~deepscope.track.records.Audio`); the board plays it.
        """
        samples = _tensor(snd_tensor, "add_audio").detach().cpu().numpy().astype(np.float32)
        if samples.ndim == 2 and samples.shape[0] <= 8:
            samples = samples.T  # channels first, as TensorBoard's [1, L]
        if samples.ndim != 1 and not (samples.ndim == 2 and samples.shape[1] <= 8):
            raise BadInputError(f"add_audio: a sound is [L] or [channels, L] (at most 8 channels), not {samples.shape}")
        if samples.size and (~np.isfinite(samples) | (np.abs(samples) > 1)).any():
            self._warn_clipped(tag, "audio samples", "[-1, 1]", stacklevel=3)
            samples = np.clip(np.nan_to_num(samples, nan=0.0), -1, 1)
        wall = None if walltime is None else float(walltime)
        self.run.log_records([Audio(tag, _step(global_step), samples, sample_rate, wall_time=wall)])

    def add_video(
        self,
        tag: str,
        vid_tensor: Any,
        global_step: int | None = None,
        fps: float = 4,
        walltime: float | None = None,
    ) -> None:
        """Clips ``vid_tensor`` ``[N, T, C, H, W]`` (uint8, or floats in [0, 1]), stored as one animated GIF.

        The ``N`` clips play side by side, tiled 8 per row (TensorBoard tiles them in a near-square grid). Floats
        outside [0, 1] are clipped with one warning per tag. ``C`` is 1 or 3 (TensorBoard also takes 4: the alpha
        is dropped here, GIF has none).
        """
        clips = _tensor(vid_tensor, "add_video").detach().cpu().numpy()
        if clips.ndim != 5 or clips.shape[2] not in (1, 3, 4) or 0 in clips.shape:
            raise BadInputError(f"add_video: clips are [N, T, C, H, W] with C 1, 3 or 4, not {clips.shape}")
        frames = np.stack([_grid(clips[:, t, :3]) for t in range(clips.shape[1])])
        wall = None if walltime is None else float(walltime)
        record = Video(tag, _step(global_step), self._clipped(tag, frames), fps=fps, wall_time=wall)
        self.run.log_records([record])

    def _image(self, tag: str, pixels: np.ndarray, global_step: int | None, walltime: float | None) -> None:
        wall = None if walltime is None else float(walltime)
        self.run.log_records([Image(tag, _step(global_step), pixels, wall_time=wall)])

    def _clipped(self, tag: str, pixels: np.ndarray) -> np.ndarray:
        """Float pixels clipped to [0, 1] (NaN to 0), as TensorBoard does, warning once per tag; others as given."""
        if pixels.dtype.kind != "f" or not pixels.size:
            return pixels
        outside = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 1)
        if not outside.any():
            return pixels
        self._warn_clipped(tag, "float pixels", "[0, 1]", stacklevel=4)  # the user's add_* call
        return np.clip(np.nan_to_num(pixels, nan=0.0), 0, 1)

    def _warn_clipped(self, tag: str, what: str, bounds: str, stacklevel: int) -> None:
        if tag in self._clipped_tags:
            return
        self._clipped_tags.add(tag)
        warnings.warn(
            f"{tag!r}: {what} outside {bounds} were clipped to it, as TensorBoard does (a normalised image: undo "
            "the normalisation first to see it as it was). This warning is shown once per tag.",
            UserWarning,
            stacklevel=stacklevel,
        )

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """A text note (stored as given; TensorBoard renders it as Markdown)."""
        wall = None if walltime is None else float(walltime)
        self.run.log_records([Text(tag, text_string, step=_step(global_step), wall_time=wall)])

    def add_embedding(
        self,
        mat: Any,
        metadata: Sequence[Any] | None = None,
        label_img: Any = None,
        global_step: int | None = None,
        tag: str = "default",
        metadata_header: Sequence[str] | None = None,
    ) -> None:
        """Feature vectors ``mat`` ``[N, D]`` with optional labels and thumbnails ``label_img`` ``[N, C, H, W]``.

        ``metadata``: ``N`` labels, or ``N`` rows of labels with ``metadata_header`` naming the columns.
        Stored as an :class:`~deepscope.track.records.Embedding` record (arrays in a ``.npz`` file in the run).
        """
        features = _tensor(mat, "add_embedding").detach().cpu().numpy()
        thumbnails = None
        if label_img is not None:
            images = self._clipped(tag, _nchw(label_img, "NCHW", "add_embedding(label_img=...)"))
            thumbnails = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
        labels = None if metadata is None else [list(row) if isinstance(row, list | tuple) else row for row in metadata]
        header = None if metadata_header is None else [str(name) for name in metadata_header]
        record = Embedding(tag, _step(global_step), features, labels, header, thumbnails)
        self.run.log_records([record])

    # ---- models and hyperparameters ------------------------------------------------------------------------------

    def add_graph(
        self, model: nn.Module, input_to_model: Any = None, verbose: bool = False, use_strict_trace: bool = True
    ) -> None:
        """The model's module hierarchy and op-level graph (:meth:`deepscope.Run.graph`), under the tag ``model``.

        ``input_to_model`` (a tensor or a tuple of the forward pass's inputs) is required. ``verbose`` and
        ``use_strict_trace`` have no effect: the graph comes from torch.fx or torch.export, not from a JIT trace.
        """
        if input_to_model is None:
            raise BadInputError(
                "add_graph needs input_to_model, an example batch for the forward pass: add_graph(model, x)"
            )
        self.run.graph(model, input_to_model)

    def add_hparams(
        self,
        hparam_dict: Mapping[str, Any],
        metric_dict: Mapping[str, Any],
        hparam_domain_discrete: Mapping[str, Sequence[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """Hyperparameters into the run's config, and their metrics as scalars of this run at ``global_step``.

        TensorBoard writes them into a new run in a subdirectory (``run_name``, default a timestamp); here they
        belong to this run, so ``run_name`` has no effect. ``hparam_domain_discrete`` has no effect either.
        """
        for name, given in (("hparam_dict", hparam_dict), ("metric_dict", metric_dict)):
            if not isinstance(given, Mapping):
                raise BadInputError(f"add_hparams: {name} must be a dict, not {type(given).__name__}")
        self.run.config.update(hparam_dict)
        if metric_dict:
            self.run.log(dict(metric_dict), step=_step(global_step))

    # ---- lifetime -----------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until everything added so far is on disk."""
        self.run.flush()

    def close(self) -> None:
        """Write everything still queued and release the run. Safe to call twice."""
        self.run.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        self.run.__exit__(kind, error, tb)

    def __getattr__(self, name: str) -> Any:
        if name in _UNSUPPORTED:
            raise NotSupportedError(
                f"SummaryWriter.{name} is not supported by deepscope's SummaryWriter: {_UNSUPPORTED[name]}."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"SummaryWriter({self.log_dir!r})"


def pr_curve(
    tag: str,
    labels: Any,
    predictions: Any,
    *,
    step: int = 0,
    num_thresholds: int = 127,
    weights: Any = None,
) -> PRCurve:
    """The precision-recall curve of binary ``labels`` against scores ``predictions`` in [0, 1].

    Threshold ``i`` is ``i / (num_thresholds - 1)``; a score counts as positive at threshold ``i`` when
    ``floor(score * (num_thresholds - 1)) >= i`` (TensorBoard's bucketing, so a score on a threshold counts).
    ``weights`` (optional, one per score) weigh the counts. Precision where nothing counts as positive is 0, and
    recall with no positive label is 0, as in TensorBoard.
    """
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise BadInputError(f"num_thresholds must be a whole number >= 2, not {num_thresholds!r}")
    truth = _tensor(labels, "add_pr_curve(labels=...)").detach().cpu().numpy().reshape(-1)
    scores = _tensor(predictions, "add_pr_curve(predictions=...)").detach().cpu().numpy().reshape(-1)
    if truth.shape != scores.shape:
        raise BadInputError(f"{tag!r}: {truth.size} labels for {scores.size} predictions; give one label per score")
    if not np.isin(truth, (0, 1)).all():
        raise BadInputError(f"{tag!r}: labels must be 0/1 or bool (one class against the rest)")
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all() or (scores.size and (scores.min() < 0 or scores.max() > 1)):
        raise BadInputError(f"{tag!r}: predictions must be scores in [0, 1] (e.g. softmax probabilities)")
    weight = np.ones_like(scores) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), scores.shape)
    bucket = np.floor(scores * (num_thresholds - 1)).astype(np.int64)
    positive = truth.astype(np.float64) * weight
    above = np.bincount(bucket, weights=positive, minlength=num_thresholds)
    above_negative = np.bincount(bucket, weights=weight - positive, minlength=num_thresholds)
    tp = np.cumsum(above[::-1])[::-1]  # weight of positives scoring at least each threshold
    fp = np.cumsum(above_negative[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    thresholds = np.arange(num_thresholds) / (num_thresholds - 1)
    return PRCurve(tag, step, thresholds, tp, fp, tn, fn, precision, recall)


def figure_pixels(figure: Figure) -> np.ndarray:
    """A matplotlib figure drawn by Agg as uint8 RGB ``[H, W, 3]``, at the figure's size and dpi.

    The figure gets an Agg canvas for the drawing and its own canvas back afterwards (a pyplot window stays
    attached); nothing global (backend, pyplot state) changes.
    """
    from matplotlib.figure import Figure

    from ..render import figure_rgba

    if not isinstance(figure, Figure):
        raise BadInputError(f"add_figure takes a matplotlib Figure (or a list of them), not {type(figure).__name__}")
    return figure_rgba(figure)[:, :, :3].copy()


def boxed(pixels: np.ndarray, boxes: np.ndarray, labels: Sequence[str] | None, rescale: float = 1) -> np.ndarray:
    """``pixels`` (uint8 ``[H, W]`` or ``[H, W, C]``) resized by ``rescale``, as RGB with each box ``x0, y0, x1,
    y1`` (in the resized picture's pixels) outlined in red, 2 px wide, and its label (if any) on a red band in its
    top-left corner."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.fromarray(pixels).convert("RGB")
    if rescale != 1:
        size = (max(1, round(picture.width * rescale)), max(1, round(picture.height * rescale)))
        picture = picture.resize(size, PILImage.Resampling.BILINEAR)
    draw = ImageDraw.Draw(picture)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=(255, 0, 0), width=2)
        if labels is not None and str(labels[i]):
            left, top, right, bottom = draw.textbbox((min(x0, x1) + 2, min(y0, y1) + 2), str(labels[i]))
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(255, 0, 0))
            draw.text((left, top), str(labels[i]), fill=(255, 255, 255))
    return np.asarray(picture)


def _uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as given; floats in [0, 1] rounded to the nearest of 256 levels (as the store does)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind == "f":
        return np.round(pixels * 255).astype(np.uint8)
    raise BadInputError(f"images are uint8 or floats in [0, 1], not {pixels.dtype}")


def _step(global_step: int | None) -> int:
    if global_step is None:
        return 0
    if isinstance(global_step, torch.Tensor | np.ndarray | np.generic) and np.size(global_step) == 1:
        global_step = int(global_step.item())
    if isinstance(global_step, bool) or not isinstance(global_step, int | np.integer) or global_step < 0:
        raise BadInputError(f"global_step must be a whole number >= 0 or None, not {global_step!r}")
    return int(global_step)


def _tensor(values: Any, where: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise BadInputError(f"{where}: expected a tensor, an array or a list of numbers ({e})") from e
    if array.dtype.kind not in "biuf":
        raise BadInputError(f"{where}: expected numbers, not an array of {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _nchw(images: Any, dataformats: str, where: str) -> np.ndarray:
    """``images`` as a NumPy array ``[N, C, H, W]`` (C 1, 3 or 4), whatever order ``dataformats`` names."""
    array = _tensor(images, where).detach().cpu().numpy()
    axes = dataformats.upper() if isinstance(dataformats, str) else ""
    if sorted(axes) not in (sorted("HW"), sorted("CHW"), sorted("NHW"), sorted("NCHW")):
        raise BadInputError(
            f"{where}: dataformats is a string of the axes N, C, H, W such as 'CHW', not {dataformats!r}"
        )
    if len(axes) != array.ndim:
        raise BadInputError(
            f"{where}: dataformats={dataformats!r} names {len(axes)} axes, but the images have shape {array.shape}"
        )
    for axis in "NC":
        if axis not in axes:
            array, axes = array[np.newaxis], axis + axes
    array = array.transpose([axes.index(axis) for axis in "NCHW"])
    if array.shape[1] not in (1, 3, 4):
        raise BadInputError(
            f"{where}: images have 1, 3 or 4 channels, not {array.shape[1]} (shape as NCHW: {array.shape})"
        )
    return array


def _grid(images: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` tiled into one ``[H', W', C]`` image (``[H', W']`` for one channel), 8 per row."""
    n, channels, height, width = images.shape
    columns = min(n, GRID_COLUMNS)
    rows = -(-n // columns)
    canvas = np.zeros((rows * height, columns * width, channels), dtype=images.dtype)
    for i, image in enumerate(images):
        y, x = divmod(i, columns)
        canvas[y * height : (y + 1) * height, x * width : (x + 1) * width] = image.transpose(1, 2, 0)
    return canvas[:, :, 0] if channels == 1 else canvas


def _with_wall(record: Any, walltime: float) -> Any:
    return dataclasses.replace(record, wall_time=float(walltime))


__all__ = ["SummaryWriter", "pr_curve"]
