"""``deepscope.Run``: a training run that logs scalars, histograms, graphs, notes and images into the store.

The training thread only checks and queues what it is given; a background writer puts it on disk in batches (see
:mod:`deepscope.store.writer`). A run is closed by ``close()``, by leaving its ``with`` block, or, if forgotten, when
it is garbage-collected or the interpreter exits (``weakref.finalize``): whatever was logged is written then.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import BadInputError, StoreError
from ..store.writer import CheckpointState, DeferredScalars, ScalarBatch, SetValue, Writer
from .records import (
    Audio,
    ComparisonTable,
    Confusion,
    Embedding,
    ExplanationSet,
    FaithfulnessCurves,
    Graph,
    Histogram,
    Image,
    PRCurve,
    Record,
    SanityCurves,
    Scalar,
    ScalarLayout,
    Text,
    Video,
)
from .system import SystemMonitor, SystemReader

if TYPE_CHECKING:
    from torch import nn

    from ..embed.extract import Features
    from ..embed.project import Projection
    from ..evaluate.classification import BinaryReport, ConfusionMatrix, OneVsRest
    from ..evaluate.comparison import MethodComparison
    from ..evaluate.faithfulness import Faithfulness
    from ..evaluate.sanity import SanityCheck
    from ..explanation import Explanation
    from .watch import Watcher

_KIND = {
    Scalar: "scalar",
    Histogram: "histogram",
    Graph: "graph",
    Text: "text",
    Image: "image",
    Audio: "audio",
    Video: "video",
    ScalarLayout: "custom_scalars",
    Embedding: "embedding",
    PRCurve: "pr_curve",
    Confusion: "confusion_matrix",
    ExplanationSet: "explanation",
    SanityCurves: "sanity_check",
    FaithfulnessCurves: "faithfulness",
    ComparisonTable: "method_comparison",
}
_LIVE: weakref.WeakSet[Run] = weakref.WeakSet()


class Run:
    """A training run in the embedded store; a context manager.

    >>> with ds.Run("runs/fmnist-relu", config={"lr": 1e-3}) as run:
    ...     run.watch(model, every=100)
    ...     for step, (x, y) in enumerate(loader):
    ...         ...
    ...         run.log({"train/loss": loss, "train/acc": acc}, step=step)
    ...     run.log({"val/loss": vl, "val/acc": va}, epoch=epoch)

    The ``with`` block ends the run ``"finished"``, ``"interrupted"`` when left by Ctrl-C (``KeyboardInterrupt``) or
    ``"failed"`` when left by any other exception (see :func:`exit_status`); the board shows which.

    Args:
        path: the run's directory, created if missing (with its parents). It must be new, empty, or (with
            ``resume=True``) an earlier deepscope run; any other directory is refused untouched.
        config: hyperparameters and settings, stored with the run; also ``run.config[key] = value`` later.
        resume: add to the run already at ``path`` (steps continue from the last ones stored).
        flush_interval: the longest time, in seconds, that a logged value waits before it is committed to disk.
        max_pending: how many values may wait in memory for the writer; beyond that, logging waits for the
            writer (it never drops a value).
        system: also record the machine's and this process's CPU and memory use, and the GPUs' memory and
            utilisation, as ``system/*`` scalars (:mod:`deepscope.track.system`; needs psutil). Off by default: a
            thread that samples in the background is something a user asks for, not something a run imposes.
        system_interval: the seconds between two samples of the system metrics.

    Raises:
        StoreError: ``path`` is not ours, cannot be written, holds a corrupted or newer database, or is being
            written by another process.
        ImportError: ``system=True`` without psutil installed (nothing is created then).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        *,
        resume: bool = False,
        flush_interval: float = 2.0,
        max_pending: int = 100_000,
        system: bool = False,
        system_interval: float = 10.0,
    ) -> None:
        # before anything is created: psutil may be missing, the interval wrong
        sampler = SystemMonitor(_log_into(weakref.ref(self)), system_interval, SystemReader().read) if system else None
        self.path = Path(path)
        self.name = self.path.name
        self._writer = Writer(self.path, resume=resume, flush_interval=flush_interval, max_pending=max_pending)
        state = self._writer.state
        self._kinds: dict[str, str] = dict(state.kinds)
        self._last: dict[str, int] = dict(state.last_steps)
        self._warned: set[str] = set()
        self._watchers: list[Watcher] = []
        self._closed: str | None = None  # why this run takes no more values, once it does not
        self._pid = os.getpid()
        self.config = Config(self._writer, state.config)
        self._system = sampler
        self._finalizer = weakref.finalize(self, _close_forgotten, self._writer, self._watchers, self._system)
        _LIVE.add(self)
        if config is not None:
            self.config.update(config)
        if self._system is not None:  # its steps go on from a resumed run's last system step
            self._system.start(max((s for t, s in state.last_steps.items() if t.startswith("system/")), default=-1) + 1)

    # ---- logging ------------------------------------------------------------------------------------------------

    def log(self, values: Mapping[str, Any], step: int | None = None, epoch: int | None = None) -> None:
        """Log ``{"train/loss": loss, "train/acc": acc, "val/confusion": cm, "samples": figure}`` at one step (and
        optionally one epoch).

        Numbers (Python or NumPy numbers, one-element tensors) are scalars; NaN and infinities are stored as such.
        Tensors on a CUDA device are copied to the host without making this call wait for the GPU. Anything else
        becomes the record kind it is (:func:`deepscope.track.convert.records`): a matplotlib figure, a PIL image
        or an image tensor / array an image; an ``Explanation``, ``ConfusionMatrix``, ``BinaryReport``,
        ``SanityCheck``, ``Faithfulness``, ``MethodComparison``, ``Features`` or a features result what its
        ``log_*`` method (or ``to_records``) stores, with that method's defaults. ``epoch`` applies to scalars.

        Without ``step``, each tag continues from its own last step (0 for a new tag). A step smaller than the
        tag's last one is kept, with a warning (once per tag): a restarted loop. The wall time is recorded for
        every value. A call is all or nothing: a value that cannot be stored stores none of the call's values.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        wall = time.time()
        if step is not None and (type(step) is not int or step < 0):
            step = _whole(step, "step")
        if epoch is None:
            epoch = -1
        elif type(epoch) is not int or epoch < 0:
            epoch = _whole(epoch, "epoch")
        if type(values) is not dict and not isinstance(values, Mapping):
            raise BadInputError(
                f"run.log takes a mapping of tag to value, e.g. run.log({{'loss': 0.3}}), not {type(values).__name__}"
            )
        kinds, last = self._kinds, self._last
        checked: list[tuple[str, Any]] = []
        on_gpu: list[tuple[str, torch.Tensor]] = []
        others: list[tuple[str, Any]] = []  # not numbers: converted to records below
        for tag, value in values.items():  # check everything before changing anything: a call is all or nothing
            kind = type(value)
            if kind is float:
                number = value
            elif kind is int:
                number = float(value)
            elif (
                isinstance(value, torch.Tensor)
                and value.device.type == "cuda"
                and value.numel() == 1
                and not value.is_complex()
            ):
                if kinds.get(tag) != "scalar":
                    self._check_tag(tag, "scalar")
                on_gpu.append((tag, value))
                continue
            else:
                number = _scalar(tag, value)
                if number is None:
                    others.append((tag, value))
                    continue
            if kinds.get(tag) != "scalar":
                self._check_tag(tag, "scalar")
            checked.append((tag, number))
        records: list[Record] = []
        if others:
            records = self._converted(others, step, epoch, wall, {tag: "scalar" for tag, _ in checked + on_gpu})
        rows: list[Any] = []
        for tag, value in checked:
            previous = last.get(tag)
            if previous is None:
                kinds[tag] = "scalar"
                at = 0 if step is None else step
            elif step is None:
                at = previous + 1
            else:
                at = step
                if at < previous and tag not in self._warned:
                    self._warn_backwards(tag, previous, at)
            last[tag] = at
            rows.append((tag, at, epoch, wall, value))
        if on_gpu:
            rows.append(_copy_from_gpu(on_gpu, [self._step(tag, step, "scalar") for tag, _ in on_gpu], epoch, wall))
        if records:
            items, weight = self._queued(records)
            self._writer.put(rows + items, len(checked) + len(on_gpu) + weight)
        else:
            self._writer.put(rows, len(values))

    def log_series(
        self,
        tag: str,
        steps: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        epochs: Sequence[int] | np.ndarray | None = None,
        wall_times: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Log many points of one scalar tag at once (an import, a metric computed after the fact).

        ``epochs`` uses -1 for "none"; ``wall_times`` defaults to now for every point.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        self._check_tag(tag, "scalar")
        steps_array = np.asarray(steps)
        n = len(steps_array)
        if steps_array.ndim != 1 or not (np.issubdtype(steps_array.dtype, np.integer) or n == 0):
            raise BadInputError(f"log_series({tag!r}): steps must be a 1-D sequence of whole numbers")
        columns = {
            "values": np.asarray(values, dtype=np.float64),
            "epochs": np.full(n, -1, dtype=np.int64) if epochs is None else np.asarray(epochs, dtype=np.int64),
            "wall_times": np.full(n, time.time()) if wall_times is None else np.asarray(wall_times, np.float64),
        }
        for name, column in columns.items():
            if column.shape != (n,):
                raise BadInputError(f"log_series({tag!r}): {name} has shape {column.shape}, steps has ({n},)")
        if n == 0:
            return
        steps_array = steps_array.astype(np.int64)
        previous = self._last.get(tag)
        drops = np.flatnonzero(np.diff(steps_array) < 0)
        if tag not in self._warned:
            if previous is not None and steps_array[0] < previous:
                self._warn_backwards(tag, previous, int(steps_array[0]))
            elif len(drops):
                self._warn_backwards(tag, int(steps_array[drops[0]]), int(steps_array[drops[0] + 1]))
        self._kinds[tag] = "scalar"
        self._last[tag] = int(steps_array[-1])
        self._writer.put([ScalarBatch(tag, steps_array, **columns)], n)

    def log_records(self, records: Iterable[Record]) -> None:
        """Log records made elsewhere (by :class:`~deepscope.track.watch.Watcher`, ``model_graph``, ...).

        Accepts :class:`Scalar`, :class:`Histogram`, :class:`Graph`, :class:`Text`, :class:`Image`,
        :class:`Audio`, :class:`Video`, :class:`ScalarLayout`, :class:`Embedding`, :class:`PRCurve`,
        :class:`Confusion`, :class:`ExplanationSet`, :class:`SanityCurves`, :class:`FaithfulnessCurves` and
        :class:`ComparisonTable`. A tag keeps the kind it was first logged with: logging another kind under it is
        an error.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        items, weight = self._queued(self._checked_records(records, time.time(), {}))
        self._writer.put(items, weight)

    def note(self, text: str, step: int | None = None, tag: str = "notes") -> None:
        """Store a text note (a remark on the run, a description); ``step`` continues the tag's own count."""
        if not isinstance(text, str):
            raise BadInputError(f"run.note takes a str, not {type(text).__name__}")
        if step is None:
            step = self._last.get(tag, -1) + 1
        self.log_records([Text(tag, text, step=step)])

    # ---- what other modules compute ----------------------------------------------------------------------------

    def log_confusion_matrix(
        self, matrix: ConfusionMatrix, step: int | None = None, tag: str = "confusion_matrix"
    ) -> None:
        """Store a :class:`deepscope.evaluate.ConfusionMatrix` (counts and class names) for the Evaluation tab.

        Without ``step``, the tag continues from its own last step (0 for a new tag).
        """
        from .convert import confusion

        self.log_records([confusion(matrix, tag, self._next_step(tag, step))])

    def log_pr_curve(
        self,
        report: BinaryReport | OneVsRest,
        step: int | None = None,
        tag: str = "pr_curve",
        num_thresholds: int = 127,
    ) -> None:
        """Store the ROC / PR data of a :func:`deepscope.evaluate.binary_report`: the counts of true and false
        positives and negatives at ``num_thresholds`` thresholds (:func:`deepscope.track.convert.pr_curves`).

        A :class:`~deepscope.evaluate.OneVsRest` report is stored as one curve per class, under ``tag/<class>``.
        """
        from .convert import pr_curves

        curves = pr_curves(report, tag, 0, num_thresholds)
        self.log_records([dataclasses.replace(c, step=self._next_step(c.tag, step)) for c in curves])

    def log_explanations(
        self,
        explanations: Explanation | Sequence[Explanation],
        labels: Any = None,
        predictions: Any = None,
        classes: Sequence[str] | None = None,
        step: int | None = None,
        tag: str = "explanations",
        **style: Any,
    ) -> ExplanationSet:
        """Store what ``ds.explain`` returned (one method, or several on the same images) for the board's gallery.

        Each input is kept as a picture with each method's heatmap and overlay (PNG files beside the run), its
        true class (``labels``), the model's class (``predictions``: indices, names or ``[N, K]`` scores), and
        what each method explained with its score; ``classes`` names class indices. ``style``: ``cmap``,
        ``alpha`` of the overlays. Returns the record stored (:func:`deepscope.track.convert.explanation_set`).
        """
        from .convert import explanation_set

        if self._closed is not None:  # before drawing any picture
            raise StoreError(self._closed)
        self._check_tag(tag, "explanation")
        record = explanation_set(explanations, labels, predictions, classes, tag, self._next_step(tag, step), **style)
        self.log_records([record])
        return record

    def log_sanity_check(self, check: SanityCheck, step: int | None = None, tag: str = "sanity_check") -> None:
        """Store a :func:`deepscope.sanity_check` (or ``data_randomization_check``) for the Evaluation tab: per
        method and metric, the mean and standard deviation over the inputs of the similarity at each step
        (:func:`deepscope.track.convert.sanity_curves`; the maps are not stored)."""
        from .convert import sanity_curves

        self.log_records([sanity_curves(check, tag, self._next_step(tag, step))])

    def log_faithfulness(
        self,
        results: Faithfulness | Sequence[Faithfulness] | Mapping[str, Faithfulness],
        step: int | None = None,
        tag: str = "faithfulness",
    ) -> None:
        """Store :func:`deepscope.faithfulness` results of one metric (deletion or insertion) on the same inputs,
        methods side by side: mean curve, its spread and mean AUC each (:func:`deepscope.track.convert.
        faithfulness_curves`). Log the other metric under another tag, e.g. ``"faithfulness/insertion"``."""
        from .convert import faithfulness_curves

        self.log_records([faithfulness_curves(results, tag, self._next_step(tag, step))])

    def log_method_comparison(
        self, comparison: MethodComparison, step: int | None = None, tag: str = "method_comparison"
    ) -> None:
        """Store a :func:`deepscope.compare_methods` table for the Evaluation tab: each method's deletion and
        insertion AUC and sanity score, best first, failed methods with the reason
        (:func:`deepscope.track.convert.comparison_table`)."""
        from .convert import comparison_table

        self.log_records([comparison_table(comparison, tag, self._next_step(tag, step))])

    def log_embedding(
        self,
        features: Features | Any,
        tag: str = "embedding",
        step: int | None = None,
        classes: Sequence[str] | None = None,
        projections: Mapping[str, Any] | Iterable[Projection] | None = None,
    ) -> Embedding:
        """Store feature vectors for the board's Projector: what ``ds.embed`` returned (its labels, predictions
        and thumbnails come along, class indices named by ``classes``), or a plain ``[N, D]`` array.

        ``projections``: points already computed, shown as they are instead of computed on the board: a dict
        ``{name: [N, 2 | 3] points or a Projection}``, or ``ds.project`` results, each named ``"<method>-<dim>d"``
        (``"tsne-2d"``). Without ``step``, the tag continues from its own last step. Returns the record stored.
        """
        from ..embed.extract import Features

        if isinstance(features, Features):
            record = features.to_record(tag, 0, list(classes) if classes is not None else None)
        else:
            record = Embedding(tag, 0, _array(features))
        if projections is not None and not isinstance(projections, Mapping):
            named: dict[str, Any] = {}
            for projection in projections:
                name = f"{projection.method}-{projection.dim}d"
                if name in named:
                    raise BadInputError(f"two projections would be named {name!r}: pass a dict naming each one")
                named[name] = projection.points
            projections = named
        stored = dict(projections) if projections is not None else None
        record = dataclasses.replace(record, step=self._next_step(tag, step), projections=stored)
        self.log_records([record])
        return record

    def watch(self, model: nn.Module, every: int = 100, checkpoint_every: int | None = None, **options: Any) -> Watcher:
        """Record histograms of ``model``'s weights, biases, gradients and activations every ``every`` steps.

        ``options`` go to :class:`deepscope.track.watch.Watcher` (``kinds``, ``bins``, ``optimizer``). The watcher
        is removed (its last step written) when the run closes; ``watcher.remove()`` stops it earlier. With
        ``checkpoint_every=N``, the weights are also kept (:meth:`checkpoint`) at every N-th of the watcher's steps,
        as that step's first forward pass sees them.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        if checkpoint_every is not None:
            checkpoint_every = _whole(checkpoint_every, "checkpoint_every")
            if checkpoint_every == 0:
                raise BadInputError("checkpoint_every must be a positive number of steps, e.g. checkpoint_every=1000")
        from .watch import Watcher

        def keep(step: int) -> None:
            if checkpoint_every is not None and step % checkpoint_every == 0:
                self.checkpoint(model, step=step)

        watcher = Watcher(model, every, sink=self.log_records, on_step=keep, **options)
        self._watchers.append(watcher)
        return watcher

    def checkpoint(
        self, model: nn.Module | Mapping[str, torch.Tensor], step: int | None = None, tag: str = "checkpoint"
    ) -> int:
        """Keep a snapshot of ``model``'s weights (its ``state_dict``, or a state dict given as such) at ``step``.

        The tensors are copied to the host now, so training may go on changing them; the writer saves the copy as
        a file beside the run (``torch.save``), and ``Reader(path).checkpoint(step)`` gives it back exactly, e.g.
        to see how features evolved (:func:`deepscope.features.evolution`). Without ``step``, the tag continues
        from its own last step (0 for a new tag). Returns the step stored.
        """
        from torch import nn

        if self._closed is not None:
            raise StoreError(self._closed)
        self._check_tag(tag, "checkpoint")
        if step is not None:
            step = _whole(step, "step")
        state = model.state_dict() if isinstance(model, nn.Module) else model
        if not isinstance(state, Mapping):
            raise BadInputError(f"run.checkpoint takes a torch.nn.Module or its state_dict, not {type(model).__name__}")
        for key, value in state.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise BadInputError(
                    f"run.checkpoint stores tensors by name; {key!r} holds a {type(value).__name__}. Pass a state "
                    "dict of tensors only"
                )
        with torch.no_grad():  # a copy, not a view: the training loop goes on changing the parameters in place
            copied = {key: value.detach().to("cpu", copy=True) for key, value in state.items()}
        at = self._step(tag, step, "checkpoint")
        self._writer.put([CheckpointState(tag, at, time.time(), copied)], 1)
        return at

    def graph(self, model: nn.Module, example: Any, tag: str = "model") -> Graph:
        """Store ``model``'s module hierarchy and op-level graph (traced on ``example``) and return it."""
        from .graph import model_graph

        graph = model_graph(model, example, tag=tag)
        self.log_records([graph])
        return graph

    # ---- lifetime -----------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything logged so far is on disk (readers see it)."""
        self._writer.flush(timeout)

    def close(self, status: str = "finished") -> None:
        """Remove the watchers, write everything still queued, and release the run. Safe to call twice."""
        if os.getpid() != self._pid:  # a forked child: the run is its parent's
            return
        if self._closed is not None and self._writer.closed:
            self._writer.close(status)  # re-raises a write error, else returns
            return
        try:
            _stop_system(self._system)
            _remove_watchers(self._watchers)  # their last recorded step still goes through log_records
        finally:
            self._closed = f"the run at {self.path} is closed; open it again with resume=True to add to it"
            self._finalizer.detach()
            self._writer.close(status)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        """Close the run: ``"finished"``; ``"interrupted"`` by Ctrl-C (``KeyboardInterrupt``), a stop asked for, not
        an error; ``"failed"`` by any other exception, whose message is noted under ``run/error``."""
        status = exit_status(error)
        if status == "failed" and not self.closed:
            self.note(f"{type(error).__name__}: {error}", tag="run/error")
        self.close(status)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}{', closed' if self.closed else ''})"

    # ---- checks -------------------------------------------------------------------------------------------------

    def _converted(
        self, values: list[tuple[str, Any]], step: int | None, epoch: int, now: float, claimed: dict[str, str]
    ) -> list[Record]:
        """The checked records of ``run.log``'s values that are not numbers, each tag at ``step`` or its next one."""
        from .convert import records

        made: list[Record] = []
        for tag, value in values:
            _check_name(tag)  # its kind is checked on each record: a OneVsRest's are tag/<class>
            for record in records(tag, value):
                changes: dict[str, Any] = {"step": self._next_step(record.tag, step)}
                if isinstance(record, Scalar) and epoch >= 0:
                    changes["epoch"] = epoch
                made.append(dataclasses.replace(record, **changes))
        return self._checked_records(made, now, claimed)

    def _checked_records(self, records: Iterable[Record], now: float, claimed: dict[str, str]) -> list[Record]:
        """``records`` checked (:func:`_checked`) and their tags' kinds too, before anything is changed; ``claimed``
        holds the tags the same call logs otherwise, so that two kinds cannot both claim one new tag."""
        checked: list[Record] = []
        for record in records:
            kind = _KIND.get(type(record))
            if kind is None:
                raise BadInputError(
                    f"cannot log a {type(record).__name__}; log_records takes {', '.join(t.__name__ for t in _KIND)}"
                )
            self._check_tag(record.tag, kind)
            if claimed.setdefault(record.tag, kind) != kind:
                raise BadInputError(f"tag {record.tag!r} is given both {claimed[record.tag]} and {kind} records")
            checked.append(_checked(record, now))
        return checked

    def _queued(self, checked: list[Record]) -> tuple[list[Any], int]:
        """What the writer is given for checked records, and its weight; each record's step becomes its tag's last."""
        items: list[Any] = []
        weight = 0
        for record in checked:
            if isinstance(record, Scalar):
                epoch = -1 if record.epoch is None else record.epoch
                step = self._step(record.tag, record.step, "scalar")
                items.append((record.tag, step, epoch, record.wall_time, record.value))
                weight += 1
            else:
                if not isinstance(record, Graph):
                    self._step(record.tag, record.step, _KIND[type(record)])
                else:
                    self._kinds[record.tag] = "graph"
                items.append(record)
                weight += 1 + (record.counts.size // 64 if isinstance(record, Histogram | Confusion) else 0)
        return items, weight

    def _check_tag(self, tag: object, kind: str) -> None:
        name = _check_name(tag)
        known = self._kinds.get(name)
        if known is not None and known != kind:
            raise BadInputError(
                f"tag {tag!r} holds {known} values; it cannot take a {kind}. Log the {kind} under another tag, "
                f"e.g. {name + '/' + kind!r}"
            )

    def _next_step(self, tag: str, step: int | None) -> int:
        """``step``, or the step after the tag's last one (0 for a new tag)."""
        return self._last.get(tag, -1) + 1 if step is None else step

    def _step(self, tag: str, step: int | None, kind: str) -> int:
        previous = self._last.get(tag)
        if previous is None:
            self._kinds[tag] = kind
            step = 0 if step is None else step
        elif step is None:
            step = previous + 1
        elif step < previous and tag not in self._warned:
            self._warn_backwards(tag, previous, step, depth=4)
        self._last[tag] = step
        return step

    def _warn_backwards(self, tag: str, previous: int, step: int, depth: int = 3) -> None:
        self._warned.add(tag)
        warnings.warn(
            f"tag {tag!r}: step {step} after step {previous}: the steps went backwards (a restarted loop?). Every "
            "point is kept, in the order logged; this is said once per tag.",
            UserWarning,
            stacklevel=depth,  # the user's call
        )


class Config(MutableMapping[str, Any]):
    """A run's configuration: a dict whose changes are written to the store.

    Values are kept as JSON: numbers, strings, booleans, ``None``, lists and dicts of these; tensors and NumPy
    arrays become lists, paths strings, and any other object its ``str()``.
    """

    def __init__(self, writer: Writer, stored: dict[str, Any]) -> None:
        self._writer = writer
        self._values = dict(stored)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise BadInputError(f"config keys are str, not {type(key).__name__} ({key!r})")
        value = _plain(value)
        self._writer.put([SetValue("config", key, json.dumps(value))], 1)
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._writer.put([SetValue("config", key, None)], 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _number(tag: str, value: object) -> float:
    """A loggable value as a float, or a clear error."""
    number = _scalar(tag, value)
    if number is None:
        if isinstance(value, torch.Tensor):
            raise BadInputError(
                f"{tag!r}: a scalar is one number, but this tensor has shape {list(value.shape)}. Reduce it "
                "(.mean(), .norm()) or log its distribution with Watcher / a Histogram record"
            )
        raise BadInputError(
            f"{tag!r}: cannot log a {type(value).__name__} ({value!r:.60}) as a scalar; log numbers or one-element "
            "tensors (text goes to run.note)"
        )
    return number


def _scalar(tag: str, value: object) -> float | None:
    """``value`` as a float if it is a number or a one-element tensor or array, else ``None``; an error for one
    complex or non-numeric element."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        if value.is_complex():
            raise BadInputError(f"{tag!r}: a complex tensor is not a scalar; log its .abs() or .real")
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1:
        if value.dtype.kind not in "biuf":
            raise BadInputError(f"{tag!r}: a one-element {value.dtype} array is not a number; log a number")
        return float(value.reshape(()))
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _check_name(tag: object) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise BadInputError(f"a tag is a non-empty str such as 'train/loss', not {tag!r}")
    return tag


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise BadInputError(f"{name} must be a whole number >= 0, not {value!r}")
    return int(value)


def _copy_from_gpu(items: list[tuple[str, torch.Tensor]], steps: list[int], epoch: int, wall: float) -> Any:
    """Queue one device-to-host copy recorded by an event: the writer thread waits for it, training does not.

    The values are stacked first (a new tensor, in stream order), so changing the logged tensors in place
    afterwards cannot change what is stored. Tensors spread over several GPUs in one call are read at once.
    """
    tags = [tag for tag, _ in items]
    devices = {tensor.device for _, tensor in items}
    if len(devices) > 1:
        values = torch.tensor([_number(tag, tensor) for tag, tensor in items], dtype=torch.float64)
        return DeferredScalars(tags, steps, epoch, wall, values, _Done())
    (device,) = devices
    with torch.no_grad():
        stacked = torch.stack([tensor.detach().reshape(()).to(torch.float64) for _, tensor in items])
    host = torch.empty(stacked.shape, dtype=torch.float64, pin_memory=True)
    host.copy_(stacked, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return DeferredScalars(tags, steps, epoch, wall, host, event)


class _Done:
    """An event that has already happened."""

    def synchronize(self) -> None:
        pass


def _checked(record: Record, now: float) -> Record:
    """``record`` with its fields checked and normalised (wall time filled in, pixels as uint8)."""
    if isinstance(record, Graph):
        return record
    if not isinstance(record.step, numbers.Integral) or isinstance(record.step, bool) or record.step < 0:
        raise BadInputError(f"{record.tag!r}: step must be a whole number >= 0, not {record.step!r}")
    changes: dict[str, Any] = {}
    if record.wall_time is None:
        changes["wall_time"] = now
    if isinstance(record, Scalar):
        changes["value"] = _number(record.tag, record.value)
        if record.epoch is not None:
            changes["epoch"] = _whole(record.epoch, "epoch")
    elif isinstance(record, Histogram):
        counts = np.asarray(record.counts)
        if counts.ndim != 1 or counts.dtype.kind not in "iuf":
            raise BadInputError(
                f"{record.tag!r}: histogram counts must be a 1-D numeric array, not {counts.dtype} {counts.shape}"
            )
        changes["counts"] = counts
    elif isinstance(record, Text):
        if not isinstance(record.text, str):
            raise BadInputError(f"{record.tag!r}: Text.text must be a str, not {type(record.text).__name__}")
    elif isinstance(record, Image):
        changes["pixels"] = _pixels(record.tag, record.pixels)
    elif isinstance(record, Audio):
        changes.update(_audio(record))
    elif isinstance(record, Video):
        changes.update(_video(record))
    elif isinstance(record, ScalarLayout):
        changes["layout"] = scalar_layout(record.tag, record.layout)
    elif isinstance(record, Embedding):
        changes.update(_embedding(record))
    elif isinstance(record, PRCurve):
        changes.update(_pr_curve(record))
    elif isinstance(record, Confusion):
        changes.update(_confusion(record))
    elif isinstance(record, ExplanationSet):
        changes.update(_explanation_set(record))
    elif isinstance(record, SanityCurves):
        changes.update(_sanity_curves(record))
    elif isinstance(record, FaithfulnessCurves):
        changes.update(_faithfulness_curves(record))
    elif isinstance(record, ComparisonTable):
        changes.update(_comparison_table(record))
    return dataclasses.replace(record, **changes) if changes else record


def _pixels(tag: str, pixels: object) -> np.ndarray:
    array = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise BadInputError(f"{tag!r}: an image is [H, W], [H, W, 3] or [H, W, 4] (channels last), not {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise BadInputError(f"{tag!r}: float pixels must lie in [0, 1]; scale them, or pass uint8")
        return np.round(array * 255).astype(np.uint8)
    raise BadInputError(f"{tag!r}: pixels must be uint8 or float in [0, 1], not {array.dtype}")


def _audio(record: Audio) -> dict[str, Any]:
    samples = _array(record.samples)
    if samples.ndim not in (1, 2) or samples.dtype.kind not in "iuf" or samples.shape[0] == 0:
        raise BadInputError(
            f"{record.tag!r}: audio samples are a numeric [T] or [T, channels] array, not {samples.shape}"
        )
    if not np.isfinite(samples).all() or np.abs(samples).max() > 1:
        raise BadInputError(f"{record.tag!r}: audio samples must lie in [-1, 1]; scale them (or clip them)")
    rate = record.sample_rate
    whole = isinstance(rate, numbers.Real) and not isinstance(rate, bool) and float(rate).is_integer()
    if not whole or not 1 <= rate <= 4_294_967_295:  # WAV keeps the rate in 32 bits
        raise BadInputError(f"{record.tag!r}: sample_rate is a whole number of samples a second, not {rate!r}")
    return {"samples": np.ascontiguousarray(samples, dtype=np.float32), "sample_rate": int(rate)}


def _video(record: Video) -> dict[str, Any]:
    frames = _array(record.frames)
    if frames.ndim not in (3, 4) or frames.shape[0] == 0 or (frames.ndim == 4 and frames.shape[3] not in (1, 3)):
        raise BadInputError(
            f"{record.tag!r}: video frames are [T, H, W] or [T, H, W, 3] (channels last), not {frames.shape}"
        )
    fps = record.fps
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps <= 100:
        raise BadInputError(f"{record.tag!r}: fps is a number of frames a second in (0, 100], not {fps!r}")
    return {"frames": np.stack([_pixels(record.tag, frame) for frame in frames]), "fps": float(fps)}


def scalar_layout(tag: str, layout: object) -> dict[str, dict[str, list[Any]]]:
    """A custom-scalars layout checked and as plain JSON-able lists (see :class:`ScalarLayout`)."""
    import re

    def bad(why: str) -> BadInputError:
        return BadInputError(
            f"{tag!r}: {why}. A layout is {{category: {{chart title: ['Multiline', [tag regex, ...]] or "
            "['Margin', [value tag, lower tag, upper tag]]}}"
        )

    if not isinstance(layout, Mapping) or not layout:
        raise bad(f"expected a non-empty dict, not {type(layout).__name__}")
    checked: dict[str, dict[str, list[Any]]] = {}
    for category, charts in layout.items():
        if not isinstance(category, str) or not isinstance(charts, Mapping):
            raise bad(f"category {category!r} must be a str naming a dict of charts")
        checked[category] = {}
        for title, chart in charts.items():
            if not isinstance(title, str) or not isinstance(chart, Sequence) or len(chart) != 2:
                raise bad(f"chart {title!r} must be a str naming a pair [kind, tags]")
            kind, tags = chart
            if kind not in ("Multiline", "Margin"):
                raise bad(f"chart {title!r} has kind {kind!r}, not 'Multiline' or 'Margin'")
            if isinstance(tags, str) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
                raise bad(f"chart {title!r} needs a list of tag names")
            if kind == "Margin" and len(tags) != 3:
                raise bad(f"margin chart {title!r} names 3 tags (value, lower, upper), not {len(tags)}")
            for pattern in tags if kind == "Multiline" else ():
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise bad(f"chart {title!r}: {pattern!r} is not a regular expression ({e})") from e
            checked[category][title] = [kind, list(tags)]
    return checked


def _array(value: object) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _embedding(record: Embedding) -> dict[str, Any]:
    tag = record.tag
    features = _array(record.features)
    if features.ndim != 2 or features.dtype.kind not in "iuf" or features.shape[0] == 0:
        raise BadInputError(f"{tag!r}: embedding features are a numeric [N, D] array with N >= 1, not {features.shape}")
    n = features.shape[0]
    changes: dict[str, Any] = {"features": np.ascontiguousarray(features, dtype=np.float32)}
    if record.labels is not None:
        labels: list[Any] = [
            [str(v) for v in row] if isinstance(row, list | tuple) else str(row) for row in record.labels
        ]
        if len(labels) != n:
            raise BadInputError(f"{tag!r}: {len(labels)} labels for {n} feature vectors; give one per vector")
        rows = {len(row) if isinstance(row, list) else None for row in labels}
        header = record.label_header
        if rows != {None} and (len(rows) != 1 or header is None or len(header) != next(iter(rows))):
            raise BadInputError(
                f"{tag!r}: labels with several columns need rows of equal length and a label_header naming each"
            )
        changes["labels"] = labels
    if record.thumbnails is not None:
        thumbnails = _array(record.thumbnails)
        if thumbnails.ndim not in (3, 4) or len(thumbnails) != n:
            raise BadInputError(
                f"{tag!r}: thumbnails are [N, H, W] or [N, H, W, C] with N = {n}, not {list(thumbnails.shape)}"
            )
        changes["thumbnails"] = np.stack([_pixels(tag, image) for image in thumbnails])
    if record.projections is not None:
        changes["projections"] = _projections(tag, record.projections, n)
    return changes


def _projections(tag: str, projections: object, n: int) -> dict[str, np.ndarray]:
    """Each named projection as float32 ``[N, 2 | 3]`` finite points, or a :class:`BadInputError`."""
    if not isinstance(projections, Mapping):
        raise BadInputError(f"{tag!r}: projections are a dict of name -> [N, 2 | 3] points, not {type(projections)}")
    checked = {}
    for name, points in projections.items():
        if not isinstance(name, str) or not name:
            raise BadInputError(f"{tag!r}: a projection's name is a non-empty str, not {name!r}")
        array = _array(getattr(points, "points", points))  # a deepscope Projection, or its points
        if array.ndim != 2 or array.shape[0] != n or array.shape[1] not in (2, 3) or array.dtype.kind not in "iuf":
            raise BadInputError(f"{tag!r}: projection {name!r} must be numeric [{n}, 2 | 3] points, not {array.shape}")
        if not np.isfinite(array).all():
            raise BadInputError(f"{tag!r}: projection {name!r} holds NaN or infinite points")
        checked[name] = np.ascontiguousarray(array, dtype=np.float32)
    return checked


def _pr_curve(record: PRCurve) -> dict[str, Any]:
    fields = ("thresholds", "tp", "fp", "tn", "fn", "precision", "recall")
    arrays = {name: _array(getattr(record, name)).astype(np.float64) for name in fields}
    shapes = {array.shape for array in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes)) == () or len(next(iter(shapes))) != 1:
        raise BadInputError(f"{record.tag!r}: a PR curve's arrays are 1-D and of one length, not {sorted(shapes)}")
    return arrays


def _confusion(record: Confusion) -> dict[str, Any]:
    counts = _array(record.counts)
    k = counts.shape[0] if counts.ndim == 2 else 0
    if counts.ndim != 2 or counts.shape != (k, k) or k == 0 or counts.dtype.kind not in "iuf":
        raise BadInputError(f"{record.tag!r}: a confusion matrix is a numeric [K, K] array, not {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.round(counts)).any():
        raise BadInputError(f"{record.tag!r}: confusion counts must be whole numbers >= 0")
    classes = [str(c) for c in record.classes] if isinstance(record.classes, Sequence) else None
    if classes is None or isinstance(record.classes, str) or len(classes) != k:
        raise BadInputError(f"{record.tag!r}: give one class name per row of the [{k}, {k}] matrix")
    return {"counts": counts.astype(np.int64), "classes": classes}


def _explanation_set(record: ExplanationSet) -> dict[str, Any]:
    tag = record.tag
    inputs = _array(record.inputs)
    if inputs.ndim != 4 or inputs.shape[3] != 3 or inputs.dtype != np.uint8 or inputs.shape[0] == 0:
        raise BadInputError(f"{tag!r}: inputs are uint8 pictures [N, H, W, 3] with N >= 1, not {inputs.shape}")
    m, n = len(record.methods), inputs.shape[0]
    pictures = (m, *inputs.shape)
    for name in ("heatmaps", "overlays"):
        array = _array(getattr(record, name))
        if array.shape != pictures or array.dtype != np.uint8:
            raise BadInputError(f"{tag!r}: {name} are uint8 [M, N, H, W, 3] = {list(pictures)}, not {array.shape}")
    scores = _array(record.scores).astype(np.float64)
    if scores.shape != (m, n) or len(record.targets) != m or any(len(row) != n for row in record.targets):
        raise BadInputError(f"{tag!r}: targets and scores are one per method and input, [{m}, {n}]")
    changes: dict[str, Any] = {
        "inputs": np.ascontiguousarray(inputs),
        "scores": scores,
        "methods": [str(method) for method in record.methods],
        "targets": [[str(t) for t in row] for row in record.targets],
    }
    for name in ("labels", "predictions"):
        values = getattr(record, name)
        if values is not None:
            if len(values) != n:
                raise BadInputError(f"{tag!r}: {len(values)} {name} for {n} inputs; give one per input")
            changes[name] = [str(v) for v in values]
    return changes


def _sanity_curves(record: SanityCurves) -> dict[str, Any]:
    tag, n = record.tag, len(record.stages)
    methods, metrics = [str(m) for m in record.methods], [str(m) for m in record.metrics]
    if not methods or not metrics or not n:
        raise BadInputError(f"{tag!r}: a sanity check has at least one method, metric and step")
    arrays: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name in ("mean", "std"):
        given = getattr(record, name)
        if not isinstance(given, Mapping) or set(given) != set(methods):
            raise BadInputError(f"{tag!r}: {name} holds one entry per method, {methods}")
        arrays[name] = {}
        for method in methods:
            per = given[method]
            if not isinstance(per, Mapping) or set(per) != set(metrics):
                raise BadInputError(f"{tag!r}: {name}[{method!r}] holds one curve per metric, {metrics}")
            curves = {metric: _array(per[metric]).astype(np.float64) for metric in metrics}
            if any(c.shape != (n,) for c in curves.values()):
                raise BadInputError(f"{tag!r}: {name}[{method!r}] curves are float [{n}], one value per step")
            arrays[name][method] = curves
    return {
        "mode": str(record.mode),
        "methods": methods,
        "stages": [str(s) for s in record.stages],
        "metrics": metrics,
        **arrays,
        "inputs": _whole(record.inputs, "inputs"),
    }


def _faithfulness_curves(record: FaithfulnessCurves) -> dict[str, Any]:
    tag = record.tag
    if record.metric not in ("deletion", "insertion"):
        raise BadInputError(f"{tag!r}: the metric is 'deletion' or 'insertion', not {record.metric!r}")
    fractions = _array(record.fractions).astype(np.float64)
    m, s = len(record.methods), fractions.shape[0] if fractions.ndim == 1 else 0
    arrays = {name: _array(getattr(record, name)).astype(np.float64) for name in ("mean", "std", "auc")}
    if not m or s < 2 or arrays["mean"].shape != (m, s) or arrays["std"].shape != (m, s):
        raise BadInputError(f"{tag!r}: fractions are [S >= 2] and mean and std [M, S] = [{m}, {s}], one per method")
    if arrays["auc"].shape != (m,):
        raise BadInputError(f"{tag!r}: auc holds one value per method, [{m}]")
    return {
        "methods": [str(x) for x in record.methods],
        "fractions": fractions,
        **arrays,
        "inputs": _whole(record.inputs, "inputs"),
        "probability": bool(record.probability),
    }


def _comparison_table(record: ComparisonTable) -> dict[str, Any]:
    tag, metrics = record.tag, [str(x) for x in record.metrics]
    known = ("deletion", "insertion", "sanity")
    if not metrics or any(x not in known for x in metrics) or record.sort_by not in metrics:
        raise BadInputError(f"{tag!r}: metrics are among {known} and sort_by one of them, not {metrics}")
    m = len(record.methods)
    arrays = {name: _array(getattr(record, name)).astype(np.float64) for name in ("mean", "std")}
    if any(a.shape != (m, len(metrics)) for a in arrays.values()) or len(record.errors) != m:
        raise BadInputError(f"{tag!r}: mean, std are [M, metrics] = [{m}, {len(metrics)}] and errors one per method")
    errors = [None if e is None else str(e) for e in record.errors]
    return {"metrics": metrics, "methods": [str(x) for x in record.methods], **arrays, "errors": errors}


def _plain(value: Any) -> Any:
    """``value`` as JSON-compatible data (see :class:`Config`)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def exit_status(error: BaseException | None) -> str:
    """The status a run ends with after ``error``: ``"finished"`` (none), ``"interrupted"`` (Ctrl-C, a
    ``KeyboardInterrupt``: stopped on purpose, not broken) or ``"failed"`` (any other exception)."""
    if error is None:
        return "finished"
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


def _remove_watchers(watchers: list[Watcher]) -> None:
    try:
        while watchers:
            watchers.pop().remove()
    finally:
        watchers.clear()


def _close_forgotten(writer: Writer, watchers: list[Watcher], system: SystemMonitor | None) -> None:
    """What a forgotten ``close()`` does, at garbage collection or interpreter exit: store everything logged."""
    try:
        _stop_system(system)
        _remove_watchers(watchers)
    finally:
        writer.close("finished")


def _stop_system(system: SystemMonitor | None) -> None:
    if system is not None:
        system.stop()


def _log_into(run: weakref.ref[Run]) -> Callable[[dict[str, float], int], None]:
    """``run.log`` for the system sampler, holding the run weakly: a forgotten run is still garbage-collected."""

    def log(values: dict[str, float], step: int) -> None:
        alive = run()
        if alive is not None:
            alive.log(values, step=step)

    return log


def _after_fork_in_child() -> None:
    # The writer thread does not exist in a forked child (a DataLoader worker): refuse to log there rather than
    # queue values nobody will write, and never let the child's exit touch the parent's run.
    for run in list(_LIVE):
        run._closed = f"the run at {run.path} belongs to process {os.getppid()}; log from that process"
        run._finalizer.detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
