"""Explaining a whole data set: every item explained by one method of ``ds.explain``, streamed batch by batch into a
Parquet file (heatmaps as float16, optionally downsampled, with each item's label, prediction, target and score),
and a sample of the items logged into a run for the board's gallery.

One function does a batch's work (:func:`explain_rows`): the single-process loop here calls it, and so does an
engine that runs it elsewhere (the Ray engine's actors, :mod:`deepscope.ray_engine`), so both write the same rows.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import probe
from ..engine import Batch, Engine, Job, RayOptions, Rows, fetch, is_ray_dataset
from ..engine import run as run_job
from ..errors import BadInputError
from ..explanation import Explanation
from ..render import FigureDisplay, NotebookFigure, explanation_grid
from ..store import parquet
from ..targets import TargetSpec
from .base import _check_options, explain, method_class

if TYPE_CHECKING:
    import pyarrow as pa

    from ..track.run import Run

# What the Parquet file of an explained data set holds, one row per item, in the data's order.
COLUMNS = ("item", "label", "prediction", "target", "score", "heatmap_scale", "heatmap")
FORMAT = "deepscope.explained_dataset/1"


@dataclass
class DatasetExplanation(FigureDisplay):
    """A data set explained by one method: where the rows are, how many, and how many the model got wrong.

    Attributes:
        path: the Parquet file, one row per item in the data's order: ``item`` (its position in the data, or the
            id the data gave it), ``label`` (null without labels), ``prediction`` (the model's class; null when
            its output is not a classifier's), ``target`` (the class explained; null for a unit or callable
            target), ``score`` (the model's score for the target), ``heatmap`` (float16, a fixed-size list of
            ``prod(heatmap_shape)`` values per row, row-major, divided by ``heatmap_scale``) and ``heatmap_scale``
            (float32, the map's largest absolute value; 1 for an all-zero map): gradients of 1e-8 and relevances
            of 1e6 alike keep float16's 11 bits of precision instead of vanishing or overflowing.
            :meth:`heatmaps` gives the maps back, scaled and reshaped.
        method: the method's name; ``options``: the options it ran with (JSON-able ones).
        items: how many items were explained; ``labelled``: how many had a label.
        misclassified: how many labelled items the model got wrong (``None`` without labels or predictions).
        heatmap_shape: each stored heatmap's shape (the input's resolution divided by ``downsample``).
        downsample: the factor the heatmaps were averaged down by (1: at the input's resolution).
        sample: the sample logged for the gallery, explained at full resolution (``None`` when none was kept).
        sample_items: the ``item`` of each row of ``sample``.
        run, tag, step: where the sample and summary were logged (``None`` without a run).
    """

    path: Path
    method: str
    items: int
    labelled: int
    misclassified: int | None
    heatmap_shape: tuple[int, ...]
    downsample: int
    sample: Explanation | None = field(default=None, repr=False)
    sample_items: list[int] = field(default_factory=list)
    sample_labels: list[int | None] = field(default_factory=list, repr=False)
    sample_predictions: list[int | None] = field(default_factory=list, repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    run: str | None = None
    tag: str | None = None
    step: int | None = None

    @property
    def accuracy(self) -> float | None:
        """The share of labelled items predicted right, or ``None`` without labels or predictions."""
        if self.misclassified is None or not self.labelled:
            return None
        return 1 - self.misclassified / self.labelled

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """The Parquet file as a pyarrow Table (``columns``: only these)."""
        pa = parquet.pyarrow()
        return pa.parquet.read_table(self.path, columns=columns)

    def heatmaps(self) -> np.ndarray:
        """Every stored heatmap, float32 ``[items, *heatmap_shape]`` (the float16 values times their scale) in the
        file's row order."""
        table = self.table(["heatmap_scale", "heatmap"])
        maps = parquet.column_array(table.column("heatmap"), self.heatmap_shape).astype(np.float32)
        scales = table.column("heatmap_scale").to_numpy().astype(np.float32)
        return maps * scales.reshape(-1, *[1] * len(self.heatmap_shape))

    def figure(self, cmap: str = "jet", alpha: float = 0.5, max_inputs: int = 8) -> NotebookFigure:
        """The sample: each item and its overlay, titled with its item id, label and prediction."""
        if self.sample is None:
            raise BadInputError("no sample was kept (sample=0); read the rows with .table() instead")
        titles = [
            f"item {item}: label {'?' if label is None else label}, pred {'?' if pred is None else pred}"
            for item, label, pred in zip(self.sample_items, self.sample_labels, self.sample_predictions)
        ]
        marks = [
            "misclassified" if label is not None and pred is not None and label != pred else ""
            for label, pred in zip(self.sample_labels, self.sample_predictions)
        ]
        figure = explanation_grid(
            [self.sample], cmap=cmap, alpha=alpha, max_inputs=max_inputs, titles=titles, marks=marks
        )
        figure.suptitle(self._summary(), fontsize=9)
        return figure

    def _summary(self) -> str:
        wrong = "" if self.misclassified is None else f", {self.misclassified} of {self.labelled} misclassified"
        return f"{self.items} items explained by {self.method}{wrong} -> {self.path.name}"

    def __repr__(self) -> str:
        accuracy = "" if self.accuracy is None else f", accuracy={self.accuracy:.4f}"
        where = "" if self.run is None else f", run={self.run!r}, tag={self.tag!r}, step={self.step}"
        return (
            f"DatasetExplanation(path={str(self.path)!r}, method={self.method!r}, items={self.items}, "
            f"misclassified={self.misclassified}{accuracy}, heatmap_shape={list(self.heatmap_shape)}, "
            f"downsample={self.downsample}{where})"
        )


def explain_dataset(
    model: nn.Module | Callable[[], nn.Module],
    data: object,
    method: str = "saliency",
    target: TargetSpec = None,
    layer: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    run: Run | None = None,
    tag: str = "explanations",
    step: int | None = None,
    downsample: int = 1,
    sample: int = 16,
    classes: list[str] | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
    options: Mapping[str, Any] | None = None,
    engine: Engine | None = None,
    input_column: str = "image",
    ray: RayOptions | None = None,
) -> DatasetExplanation:
    """Explain every item of ``data`` with ``method`` and write the heatmaps, with what the model made of each item,
    to a Parquet file; log a sample into ``run`` for the board's gallery.

    The data are streamed once (:mod:`deepscope.engine`), ``batch_size`` items per ``ds.explain`` call, in this
    process or on Ray Data actors; each batch's rows are appended to the file as they reach this process (a row
    group per batch), so no more than a few batches of heatmaps are ever in memory. The file's rows are in item
    order at the end, whichever order Ray finished the batches in. The model runs as given (call
    ``model.eval()``) and is left as found, as ``ds.explain`` leaves it.

    The sample the gallery shows holds up to ``sample`` items: the first misclassified ones (up to half of it:
    seed 000's advice, do not look only at what the model gets right), then the first correctly classified ones,
    by item id; their inputs are read again and explained here at full resolution. It is logged with
    ``run.log_explanations`` under ``tag`` and points to the Parquet file (and says how many items it was drawn
    from and how many are wrong), so the board's "misclassified only" filter works on it.

    Args:
        model: a ``torch.nn.Module`` (a classifier, for predictions and accuracy); on Ray also a factory, a
            callable without arguments that builds it (on each actor, and here for the sample).
        data: a tensor ``[N, ...]``, an ``(inputs, labels)`` pair, or a DataLoader / iterable of batches
            (:mod:`deepscope.batches`), items numbered by their position; or a ``ray.data.Dataset`` with columns
            ``image`` (``input_column``), optionally ``label`` and ``id`` (the item ids; default: row order).
        method, target, layer: as ``ds.explain`` takes them.
        options: the method's options, as ``ds.explain`` takes them (a dict: ``batch_size`` here is the data's).
        path: the Parquet file to write (its folder is created). Default, with a run in a directory:
            ``<run>/datasets/<tag>-<8 random hex digits>.parquet``.
        run: a :class:`deepscope.Run` to log the sample and summary into.
        tag, step: where in the run (``step`` continues the tag's own count by default).
        downsample: store each heatmap averaged over ``downsample x downsample`` blocks (a partial block at the
            edge is averaged over what it holds): 4 keeps a 224 x 224 map in 56 x 56 (6 KB as float16).
        sample: how many items the gallery shows (0: none).
        classes: class names, to show labels and predictions by name in the gallery.
        batch_size: items per ``ds.explain`` call.
        progress: show a progress bar; ``None`` shows it on a terminal only.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``.
        input_column, ray: the Ray data set's column of inputs, and more Ray options
            (:class:`~deepscope.engine.RayOptions`).

    Returns:
        A :class:`DatasetExplanation`: ``path``, ``items``, ``misclassified``, ``accuracy``; Jupyter shows the sample.

    Raises:
        BadInputError: an unknown method or option, a bad ``downsample``, ``sample`` or ``batch_size``, no
            ``path`` without a directory run, or data in none of the forms :mod:`deepscope.batches` takes.
        ImportError: pyarrow is missing (``pip install 'deepscope[parquet]'``).
    """
    options = dict(options or {})
    _check_options(method_class(method), dict(options))
    downsample = _positive(downsample, "downsample")
    sample = _positive(sample, "sample", minimum=0)
    batch_size = _positive(batch_size, "batch_size")
    on_ray = engine == "ray" or (engine is None and is_ray_dataset(data))
    if not isinstance(model, nn.Module) and not (on_ray and callable(model)):
        raise BadInputError(f"model must be a torch.nn.Module (or on Ray a factory), not {type(model).__name__}.")
    ray_options = replace(ray or RayOptions(), input_column=input_column)
    writer = _Appender(_parquet_path(path, run, tag), method, downsample, sample)
    job = Job(
        map=partial(_explain_map, method=method, target=target, layer=layer, downsample=downsample, options=options),
        merge=writer,
        desc=f"explaining ({method})",
        batch_size=batch_size,
    )
    try:
        run_job(job, model, data, engine, progress, None, ray_options)
    finally:
        writer.close()
    local = model if isinstance(model, nn.Module) else model()  # type: ignore[operator]
    explained = _explain_sample(local, data, writer, ray_options, batch_size, method, target, layer, options)
    return _finish(writer, run, tag, step, classes, explained)


def explain_rows(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor | None,
    items: Tensor,
    method: str,
    target: TargetSpec,
    layer: str | None,
    downsample: int,
    **options: Any,
) -> tuple[dict[str, np.ndarray | None], Explanation]:
    """One batch explained: its rows of the Parquet file as NumPy columns (:data:`COLUMNS`; ``label``,
    ``prediction`` and ``target`` ``None`` where unknown; ``heatmap`` float16 ``[B, *shape]`` divided by
    ``heatmap_scale``) and the explanation itself (full resolution)."""
    with torch.enable_grad():  # the engine runs its maps under no_grad; explanations differentiate
        explained = explain(model, inputs, method=method, target=target, layer=layer, **options)
    if not isinstance(explained, Explanation):
        raise BadInputError("explain_dataset explains models of one input tensor; pass the others as forward_args")
    if target is None and explained.targets is not None:
        predictions: Tensor | None = explained.targets  # the predicted class is what target=None explains
    else:
        with torch.no_grad(), probe.preserved(model):
            output = probe.run(model, inputs, options.get("output"))
        predictions = output.argmax(dim=1).cpu() if output.ndim == 2 and output.shape[1] > 1 else None
    heatmap = _downsampled(explained.heatmap, downsample)
    scale = heatmap.abs().flatten(1).amax(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    rows: dict[str, np.ndarray | None] = {
        "item": items.detach().cpu().long().numpy(),
        "label": None if labels is None else labels.detach().cpu().long().numpy(),
        "prediction": None if predictions is None else predictions.detach().cpu().long().numpy(),
        "target": None if explained.targets is None else explained.targets.long().numpy(),
        "score": explained.scores.float().numpy(),
        "heatmap_scale": scale.float().numpy(),
        "heatmap": (heatmap / scale.view(-1, *[1] * (heatmap.ndim - 1))).to(torch.float16).numpy(),
    }
    return rows, explained


def _explain_map(
    model: nn.Module,
    batch: Batch,
    method: str,
    target: TargetSpec,
    layer: str | None,
    downsample: int,
    options: dict[str, Any],
) -> Rows:
    """The engine's map: a batch's rows, the unknown columns left out (the engine's rows are arrays only)."""
    rows, _ = explain_rows(model, batch.inputs, batch.labels, batch.ids, method, target, layer, downsample, **options)
    return {name: values for name, values in rows.items() if values is not None}


def _downsampled(heatmap: Tensor, factor: int) -> Tensor:
    """``[N, *spatial]`` maps averaged over ``factor``-wide blocks along each spatial axis (1 or 2 of them)."""
    if factor == 1:
        return heatmap
    spatial = heatmap.ndim - 1
    if spatial not in (1, 2):
        raise BadInputError(f"downsample={factor} averages 1-D or 2-D maps; these heatmaps are {list(heatmap.shape)}")
    pool = torch.nn.functional.avg_pool1d if spatial == 1 else torch.nn.functional.avg_pool2d
    return pool(heatmap.unsqueeze(1), factor, ceil_mode=True).squeeze(1)  # type: ignore[operator]


class _Appender:
    """The engine's merge: appends each batch's rows to the Parquet file (a row group per batch, its rows in item
    order), counts items and mistakes, and keeps the candidates of the sample (the ``size`` smallest ids of the
    misclassified items and of the others). It runs in this process only; the copy Ray sends to its actors along
    with the job is never called there, and pickles without the open file."""

    def __init__(self, path: Path, method: str, downsample: int, size: int) -> None:
        parquet.pyarrow()  # before anything is computed: a missing pyarrow fails at once
        self.path, self.method, self.downsample, self.size = path, method, downsample, size
        self.writer: Any = None
        self.shape: tuple[int, ...] = ()
        self.items = self.labelled = self.wrong = 0
        self.predicted = True
        self.options: dict[str, Any] = {}
        self.ranges: list[tuple[int, int]] = []  # each row group's first and last item
        self.candidates: dict[bool, np.ndarray] = {}  # misclassified or not -> [k, 3] (item, label, prediction)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "writer": None}

    def __call__(self, merged: Rows | None, rows: Rows) -> Rows:
        full: dict[str, np.ndarray | None] = {name: rows.get(name) for name in COLUMNS}
        order = np.argsort(rows["item"], kind="stable")
        full = {name: None if v is None else v[order] for name, v in full.items()}
        self.write(full)
        return {}

    def write(self, rows: dict[str, np.ndarray | None]) -> None:
        pa = parquet.pyarrow()
        heatmap, items = rows["heatmap"], rows["item"]
        assert heatmap is not None and items is not None
        if self.writer is None:
            self.shape = tuple(heatmap.shape[1:])
            types = {"item": pa.int64(), "label": pa.int64(), "prediction": pa.int64(), "target": pa.int64()}
            types |= {"score": pa.float32(), "heatmap_scale": pa.float32()}
            types["heatmap"] = pa.list_(pa.float16(), int(np.prod(self.shape)))
            about: dict[str, Any] = {"format": FORMAT, "method": self.method, "downsample": self.downsample}
            self.schema = parquet.schema(types, {"heatmap": self.shape}, **about)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pa.parquet.ParquetWriter(self.path, self.schema)
        elif tuple(heatmap.shape[1:]) != self.shape:
            raise BadInputError(
                f"every item's heatmap must have one shape to share a file: {list(heatmap.shape[1:])} after "
                f"{list(self.shape)}; resize the inputs to one size"
            )
        n = len(heatmap)
        columns = {name: rows[name] for name in COLUMNS if name != "heatmap"}
        arrays = [pa.array(v) if v is not None else pa.nulls(n, pa.int64()) for v in columns.values()]
        arrays = [a.cast(self.schema.field(name).type) for a, name in zip(arrays, columns)]
        arrays.append(parquet.array_column(heatmap))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.ranges.append((int(items[0]), int(items[-1])))
        self.count(rows)

    def count(self, rows: dict[str, np.ndarray | None]) -> None:
        items, labels, predictions = rows["item"], rows["label"], rows["prediction"]
        assert items is not None
        self.items += len(items)
        if labels is not None:
            self.labelled += len(labels)
        if predictions is None:
            self.predicted = False
        elif labels is not None:
            self.wrong += int((labels != predictions).sum())
        unknown = np.full(len(items), -1, dtype=np.int64)
        known = np.stack(
            [items, unknown if labels is None else labels, unknown if predictions is None else predictions], 1
        )
        wrong = np.zeros(len(items), bool) if labels is None or predictions is None else labels != predictions
        for kind in (True, False):
            found = np.concatenate([self.candidates.get(kind, known[:0]), known[wrong == kind]])
            self.candidates[kind] = found[np.argsort(found[:, 0], kind="stable")][: self.size]

    def chosen(self) -> np.ndarray:
        """The sample: ``[k, 3]`` (item, label, prediction; -1 where unknown), in item order."""
        empty = np.zeros((0, 3), np.int64)
        wrong, right = self.candidates.get(True, empty), self.candidates.get(False, empty)
        wrong = wrong[: max(self.size // 2, self.size - len(right))]
        both = np.concatenate([wrong, right[: self.size - len(wrong)]])
        return both[np.argsort(both[:, 0], kind="stable")]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            _in_item_order(self.path, self.ranges)


def _in_item_order(path: Path, ranges: list[tuple[int, int]]) -> None:
    """Rewrite the file with its rows in item order when the row groups came out of order (Ray finishes batches
    as it pleases): row group by row group when their item ranges do not overlap (a batch is a run of consecutive
    rows), else by sorting the whole table in memory."""
    firsts = [first for first, _ in ranges]
    order = sorted(range(len(ranges)), key=lambda g: firsts[g])
    if order == list(range(len(ranges))) and all(a[1] < b[0] for a, b in itertools.pairwise(ranges)):
        return
    pa = parquet.pyarrow()
    file = pa.parquet.ParquetFile(path)
    temporary = path.with_suffix(".sorting")
    separate = all(ranges[a][1] < ranges[b][0] for a, b in itertools.pairwise(order))
    with pa.parquet.ParquetWriter(temporary, file.schema_arrow) as out:
        if separate:
            for group in order:
                out.write_table(file.read_row_group(group))
        else:
            out.write_table(file.read().sort_by("item"))
    os.replace(temporary, path)


def _explain_sample(
    model: nn.Module,
    data: object,
    writer: _Appender,
    ray_options: RayOptions,
    batch_size: int,
    method: str,
    target: TargetSpec,
    layer: str | None,
    options: dict[str, Any],
) -> Explanation | None:
    """The sample's inputs, read again (up to the last one chosen), explained here at full resolution."""
    chosen = writer.chosen()
    if not len(chosen):
        return None
    wanted = chosen[:, 0].tolist()
    by_id = fetch(data, wanted, batch_size, ray_options)
    if len(by_id) < len(wanted):  # a one-shot iterator (a generator) cannot be read again
        warnings.warn(
            "explain_dataset: the data could not be read again for the sample's inputs (a generator?); no sample is "
            "logged. Pass a tensor, a pair or a DataLoader to get one.",
            stacklevel=3,
        )
        return None
    inputs = torch.stack([by_id[i] for i in wanted]).to(probe.model_device(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once already, by the pass over the data
        explained = explain(model, inputs, method=method, target=target, layer=layer, **options)
    assert isinstance(explained, Explanation)
    return explained


def _finish(
    writer: _Appender,
    run: Run | None,
    tag: str,
    step: int | None,
    classes: list[str] | None,
    sample: Explanation | None,
) -> DatasetExplanation:
    chosen = writer.chosen() if sample is not None else np.zeros((0, 3), np.int64)
    wrong = writer.wrong if writer.predicted and writer.labelled else None

    def known(values: np.ndarray) -> list[int | None]:
        return [None if v < 0 else int(v) for v in values.tolist()]

    result = DatasetExplanation(
        path=writer.path,
        method=writer.method,
        items=writer.items,
        labelled=writer.labelled,
        misclassified=wrong,
        heatmap_shape=writer.shape,
        downsample=writer.downsample,
        sample=sample,
        sample_items=chosen[:, 0].tolist(),
        sample_labels=known(chosen[:, 1]),
        sample_predictions=known(chosen[:, 2]),
        options={} if sample is None else sample.options,
    )
    if run is not None and sample is not None:
        source = {"path": _relative(writer.path, run), "items": writer.items, "misclassified": wrong}
        labelled = all(v is not None for v in result.sample_labels)
        predicted = all(v is not None for v in result.sample_predictions)
        record = run.log_explanations(
            sample,
            labels=result.sample_labels if labelled else None,
            predictions=result.sample_predictions if predicted else None,
            classes=classes,
            step=step,
            tag=tag,
            items=result.sample_items,
            source=source,
        )
        result.run, result.tag, result.step = str(run.path), tag, record.step
    return result


def _parquet_path(path: str | os.PathLike[str] | None, run: Run | None, tag: str) -> Path:
    if path is not None:
        found = Path(path)
        if found.suffix != ".parquet":
            raise BadInputError(f"path={str(path)!r}: name the Parquet file, ending in .parquet")
        return found
    if run is None or not isinstance(run.path, Path):
        raise BadInputError(
            "explain_dataset writes a Parquet file: pass path='explained.parquet' (or a run in a directory, "
            "whose datasets/ folder it then uses)"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", tag)
    return run.path / "datasets" / f"{name}-{uuid.uuid4().hex[:8]}.parquet"


def _relative(path: Path, run: Run) -> str:
    """The file's path relative to the run's directory when it is inside it (the run may move), else absolute."""
    resolved = path.resolve()
    if isinstance(run.path, Path) and resolved.is_relative_to(run.path.resolve()):
        return resolved.relative_to(run.path.resolve()).as_posix()
    return str(resolved)


def _positive(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise BadInputError(f"{name}={value!r} must be an int of at least {minimum}.")
    return int(value)
