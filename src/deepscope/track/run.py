"""``deepscope.Run``: a training run that logs scalars, histograms, graphs, notes and images into the store.

The training thread only checks and queues what it is given; a background writer puts it on disk in batches (see
:mod:`deepscope.store.writer`). A run is closed by ``close()``, by leaving its ``with`` block, or, if forgotten, when
it is garbage-collected or the interpreter exits (``weakref.finalize``): whatever was logged is written then.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from ..store.locations import locate
from ..store.postgres import is_url
from ..store.ranks import mine, owner_of, tag_of
from ..store.records import (
    CheckpointState,
    Embedding,
    ExplanationSet,
    Graph,
    Record,
    Scalar,
    ScalarLayout,
    Text,
    codec_for,
    codecs,
)
from ..store.records.checkpoint import KIND as CHECKPOINT
from ..store.records.codec import array as _array
from ..store.records.codec import whole as _whole
from ..store.records.explanation import KIND as EXPLANATION
from ..store.records.scalar import KIND as SCALAR
from ..store.records.scalar import as_number as _scalar
from ..store.records.scalar import number as _number
from ..store.writer import DeferredScalars, ScalarBatch, SetValue, Writer
from .distributed import current as current_ranks
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
    from .probes import Probes
    from .watch import Watcher

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

    In a distributed job (``torchrun``: ``torch.distributed``'s rank and world size, or before
    ``init_process_group`` the ``RANK`` and ``WORLD_SIZE`` it sets) every rank may create the run with the same
    arguments, and all of them log into one run: rank 0 owns it; ``log`` stores what rank 0 logs, and on every rank
    what is logged with ``all_ranks=True``, as one series per rank (``<tag>/rank<k>``); on other ranks every other
    call (``log`` without ``all_ranks``, ``log_records``, ``config`` changes, ``watch``, ``checkpoint``, ...) stores
    nothing and costs next to nothing. The run is finished when every rank that opened it has closed
    (:mod:`deepscope.store.ranks`); creating it on rank 0 alone works as well.

    Args:
        path: the run's directory, created if missing (with its parents). It must be new, empty, or (with
            ``resume=True``) an earlier deepscope run; any other directory is refused untouched. Or a PostgreSQL
            URL with ``name``; or nothing, for the run ``name`` in the store the environment variable
            ``DEEPSCOPE_STORE`` names (a URL or a directory of runs; default ``runs``).
        config: hyperparameters and settings, stored with the run; also ``run.config[key] = value`` later.
        resume: add to the run already at ``path`` (steps continue from the last ones stored).
        flush_interval: the longest time, in seconds, that a logged value waits before it is committed to disk.
        max_pending: how many values may wait in memory for the writer; beyond that, logging waits for the
            writer (it never drops a value).
        system: also record the machine's and this process's CPU and memory use, and the GPUs' memory and
            utilisation, as ``system/*`` scalars (:mod:`deepscope.track.system`; needs psutil). Off by default: a
            thread that samples in the background is something a user asks for, not something a run imposes.
        system_interval: the seconds between two samples of the system metrics.
        name: the run's name: required when ``path`` is a PostgreSQL URL (``"postgresql://user@host/db"``, many
            runs in one database, psycopg 3 needed: ``pip install 'deepscope[postgres]'``), where it identifies the
            run; for a directory, what the board shows (default: the directory's name).
        distributed: in a distributed job, log into the run of the whole job (above); ``False``: this process's run
            is its own, as outside one.

    Attributes:
        rank: this process's rank in the job the run belongs to (0 outside a distributed one).
        world_size: how many processes that job has (1 outside one).

    Raises:
        StoreError: ``path`` is not ours, cannot be written, holds a corrupted or newer database, or is being
            written by another process.
        ImportError: ``system=True`` without psutil installed (nothing is created then).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        resume: bool = False,
        flush_interval: float = 2.0,
        max_pending: int = 100_000,
        system: bool = False,
        system_interval: float = 10.0,
        name: str | None = None,
        distributed: bool = True,
    ) -> None:
        # before anything is created: psutil may be missing, the interval wrong
        sampler = SystemMonitor(_log_into(weakref.ref(self)), system_interval, SystemReader().read) if system else None
        ranks = current_ranks() if distributed else None
        self.rank, self.world_size = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        self._ranks = ranks
        self._idle = ranks is not None and not ranks.owner  # stores only what is logged with all_ranks=True
        path, name = locate(path, name)
        self.path: Path | str = path if is_url(path) else Path(path)  # type: ignore[assignment]
        self.name = name or Path(path).name
        self._writer = Writer(
            self.path, resume=resume, flush_interval=flush_interval, max_pending=max_pending, name=name, ranks=ranks
        )
        state = self._writer.state
        rank = None if ranks is None else ranks.rank
        self._kinds: dict[str, str] = {tag: kind for tag, kind in state.kinds.items() if mine(tag, rank)}
        self._last: dict[str, int] = {tag: step for tag, step in state.last_steps.items() if mine(tag, rank)}
        self._warned: set[str] = set()
        self._watchers: list[Watcher] = []
        self._closed: str | None = None  # why this run takes no more values, once it does not
        self._pid = os.getpid()
        self.config = Config(None if self._idle else self._writer, state.config)
        self._system = None if self._idle else sampler
        self._finalizer = weakref.finalize(self, _close_forgotten, self._writer, self._watchers, self._system)
        _LIVE.add(self)
        if config is not None:
            self.config.update(config)
        if self._system is not None:  # its steps go on from a resumed run's last system step
            self._system.start(max((s for t, s in state.last_steps.items() if t.startswith("system/")), default=-1) + 1)

    # ---- logging ------------------------------------------------------------------------------------------------

    def log(
        self, values: Mapping[str, Any], step: int | None = None, epoch: int | None = None, *, all_ranks: bool = False
    ) -> None:
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

        In a distributed job only rank 0's values are stored, unless ``all_ranks=True``: then every rank's, each
        under ``<tag>/rank<k>`` (one series per rank, rank 0's included); on another rank a call without it
        returns at once. Outside a distributed job ``all_ranks`` changes nothing.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        if self._ranks is not None:
            if all_ranks:
                values = self._per_rank(values)
            elif self._idle:
                return
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
                if kinds.get(tag) != SCALAR:
                    self._check_tag(tag, SCALAR)
                on_gpu.append((tag, value))
                continue
            else:
                number = _scalar(tag, value)
                if number is None:
                    others.append((tag, value))
                    continue
            if kinds.get(tag) != SCALAR:
                self._check_tag(tag, SCALAR)
            checked.append((tag, number))
        records: list[Record] = []
        if others:
            records = self._converted(others, step, epoch, wall, {tag: SCALAR for tag, _ in checked + on_gpu})
        rows: list[Any] = []
        for tag, value in checked:
            previous = last.get(tag)
            if previous is None:
                kinds[tag] = SCALAR
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
            rows.append(_copy_from_gpu(on_gpu, [self._step(tag, step, SCALAR) for tag, _ in on_gpu], epoch, wall))
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
        if self._idle:
            return
        self._check_tag(tag, SCALAR)
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
        self._kinds[tag] = SCALAR
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
        if self._idle:
            return
        items, weight = self._queued(self._checked_records(records, time.time(), {}))
        self._writer.put(items, weight)

    def note(self, text: str, step: int | None = None, tag: str = "notes") -> None:
        """Store a text note (a remark on the run, a description); ``step`` continues the tag's own count."""
        if not isinstance(text, str):
            raise BadInputError(f"run.note takes a str, not {type(text).__name__}")
        if step is None:
            step = self._last.get(tag, -1) + 1
        self.log_records([Text(tag, text, step=step)])

    def add_custom_scalars(self, layout: Mapping[str, Mapping[str, Sequence[Any]]]) -> None:
        """How the board's Scalars view groups scalar tags into charts, above its per-tag charts (TensorBoard's
        ``SummaryWriter.add_custom_scalars`` layout, the same dict).

        ``layout`` is ``{category: {chart title: ["Multiline", [tag regex, ...]] or ["Margin", [value, lower,
        upper]]}}``: a multiline chart overlays, for every run, each scalar tag one of its regexes finds
        (``re.search``); a margin chart draws the tag ``value`` with a band between the tags ``lower`` and
        ``upper``. Stored as a :class:`~deepscope.track.records.ScalarLayout` record (any store, PostgreSQL's too);
        a later layout replaces an earlier one. A layout edited in the board and downloaded as JSON is this dict.

        Raises:
            BadInputError: a layout of another shape, or a regex that does not compile (naming the chart).
        """
        from ..store.records.layout import scalar_layout

        self.log_records([ScalarLayout(scalar_layout("custom_scalars", layout))])

    # ---- what other modules compute ----------------------------------------------------------------------------

    def log_confusion_matrix(
        self, matrix: ConfusionMatrix, step: int | None = None, tag: str = "confusion_matrix"
    ) -> None:
        """Store a :class:`deepscope.evaluate.ConfusionMatrix` (counts and class names) for the Evaluation tab.

        Without ``step``, the tag continues from its own last step (0 for a new tag).
        """
        from ..store.records.confusion import confusion

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
        from ..store.records.pr_curve import pr_curves

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
        items: Sequence[int] | None = None,
        source: dict[str, Any] | None = None,
        **style: Any,
    ) -> ExplanationSet:
        """Store what ``ds.explain`` returned (one method, or several on the same images) for the board's gallery.

        Each input is kept as a picture with each method's heatmap and overlay (PNG files beside the run), its
        true class (``labels``), the model's class (``predictions``: indices, names or ``[N, K]`` scores), and
        what each method explained with its score; ``classes`` names class indices. ``style``: ``cmap``,
        ``alpha`` of the overlays. ``items`` and ``source``: for a sample of a data set explained by
        ``ds.explain_dataset``, each input's id and the Parquet file of every item. Returns the record stored
        (:func:`deepscope.track.convert.explanation_set`).
        """
        from ..store.records.explanation import explanation_set

        if self._closed is not None:  # before drawing any picture
            raise StoreError(self._closed)
        self._check_tag(tag, EXPLANATION)
        at = self._next_step(tag, step)
        record = explanation_set(
            explanations, labels, predictions, classes, tag, at, items=items, source=source, **style
        )
        self.log_records([record])
        return record

    def log_sanity_check(self, check: SanityCheck, step: int | None = None, tag: str = "sanity_check") -> None:
        """Store a :func:`deepscope.sanity_check` (or ``data_randomization_check``) for the Evaluation tab: per
        method and metric, the mean and standard deviation over the inputs of the similarity at each step
        (:func:`deepscope.track.convert.sanity_curves`; the maps are not stored)."""
        from ..store.records.sanity import sanity_curves

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
        from ..store.records.faithfulness import faithfulness_curves

        self.log_records([faithfulness_curves(results, tag, self._next_step(tag, step))])

    def log_method_comparison(
        self, comparison: MethodComparison, step: int | None = None, tag: str = "method_comparison"
    ) -> None:
        """Store a :func:`deepscope.compare_methods` table for the Evaluation tab: each method's deletion and
        insertion AUC and sanity score, best first, failed methods with the reason
        (:func:`deepscope.track.convert.comparison_table`)."""
        from ..store.records.comparison import comparison_table

        self.log_records([comparison_table(comparison, tag, self._next_step(tag, step))])

    def log_embedding(
        self,
        features: Features | Any,
        tag: str = "embedding",
        step: int | None = None,
        classes: Sequence[str] | None = None,
        projections: Mapping[str, Any] | Iterable[Projection] | None = None,
        parquet: bool | None = None,
    ) -> Embedding:
        """Store feature vectors for the board's Projector: what ``ds.embed`` returned (its labels, predictions
        and thumbnails come along, class indices named by ``classes``), or a plain ``[N, D]`` array.

        ``projections``: points already computed, shown as they are instead of computed on the board: a dict
        ``{name: [N, 2 | 3] points or a Projection}``, or ``ds.project`` results, each named ``"<method>-<dim>d"``
        (``"tsne-2d"``). Without ``step``, the tag continues from its own last step. Returns the record stored.

        ``parquet``: keep the arrays and labels in a Parquet file beside the run instead of a ``.npz`` and the
        database (``None``: from a million items on, when pyarrow is installed); the board reads either.
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
        record = dataclasses.replace(record, step=self._next_step(tag, step), projections=stored, parquet=parquet)
        self.log_records([record])
        return record

    def watch(
        self,
        model: nn.Module,
        every: int = 100,
        checkpoint_every: int | None = None,
        probes: torch.Tensor | Probes | None = None,
        labels: Any = None,
        methods: Sequence[str] | str | None = None,
        **options: Any,
    ) -> Watcher:
        """Record histograms of ``model``'s weights, biases, gradients and activations every ``every`` steps.

        ``options`` go to :class:`deepscope.track.watch.Watcher` (``kinds``, ``bins``, ``optimizer``). The watcher
        is removed (its last step written) when the run closes; ``watcher.remove()`` stops it earlier. With
        ``checkpoint_every=N``, the weights are also kept (:meth:`checkpoint`) at every N-th of the watcher's steps,
        as that step's first forward pass sees them.

        With ``probes=images`` (a batch ``[N, C, H, W]``), those images are explained by ``methods`` (default
        Grad-CAM) at every ``every``-th step too, with the same weights as the checkpoint of that step, and
        stored as an explanation set under ``"probes"`` with their ``labels`` and the model's class and score at
        that step (the board's Explanations view); ``probes=Probes(...)``
        (:class:`deepscope.track.probes.Probes`) chooses another frequency, the target, layer, options and tag.
        Probing runs in eval mode on the model's device before the step's forward pass and leaves the model and
        training as they were: modes, ``requires_grad`` flags, ``.grad`` and torch's random state
        (:func:`deepscope.track.probes.untouched`). ``kinds=()`` records probes without histograms.

        A ``DistributedDataParallel`` model is watched through the module it wraps (tags without ``module.``). In a
        distributed job rank 0 records; on other ranks the watcher counts steps and records nothing.
        """
        if self._closed is not None:
            raise StoreError(self._closed)
        if checkpoint_every is not None:
            checkpoint_every = _whole(checkpoint_every, "checkpoint_every")
            if checkpoint_every == 0:
                raise BadInputError("checkpoint_every must be a positive number of steps, e.g. checkpoint_every=1000")
        from .watch import Watcher, unwrapped

        if self._idle:  # records on rank 0 only: here a watcher that keeps nothing, so that its calls still work
            watcher = Watcher(model, every, sink=self.log_records, **(options | {"kinds": ()}))
            self._watchers.append(watcher)
            return watcher

        probing = None
        if probes is not None or labels is not None or methods is not None:
            from .probes import probes_from

            if probes is None:
                raise BadInputError("labels= and methods= describe probes: pass the images too, as probes=images")
            probing = probes_from(probes, labels, methods, every)
            self._check_tag(probing.tag, EXPLANATION)
            probing.check(unwrapped(model))

        def keep(step: int) -> None:
            if checkpoint_every is not None and step % checkpoint_every == 0:
                self.checkpoint(model, step=step)
            if probing is not None and probing.due(step):
                self.log_records([probing.record(unwrapped(model), step)])

        watcher = Watcher(model, every, sink=self.log_records, on_step=keep, **options)
        self._watchers.append(watcher)
        return watcher

    def checkpoint(
        self, model: nn.Module | Mapping[str, torch.Tensor], step: int | None = None, tag: str = "checkpoint"
    ) -> int:
        """Keep a snapshot of ``model``'s weights (its ``state_dict``, or a state dict given as such) at ``step``; of a
        ``DistributedDataParallel`` model, the module it wraps (keys without ``module.``).

        The tensors are copied to the host now, so training may go on changing them; the writer saves the copy as
        a file beside the run (``torch.save``), and ``Reader(path).checkpoint(step)`` gives it back exactly, e.g.
        to see how features evolved (:func:`deepscope.features.evolution`). Without ``step``, the tag continues
        from its own last step (0 for a new tag). Returns the step stored.
        """
        from torch import nn

        from .watch import unwrapped

        if self._closed is not None:
            raise StoreError(self._closed)
        if self._idle:  # rank 0 keeps the weights (the same on every rank of a data-parallel job)
            return self._step(tag, None if step is None else _whole(step, "step"), CHECKPOINT)
        self._check_tag(tag, CHECKPOINT)
        if step is not None:
            step = _whole(step, "step")
        state = unwrapped(model).state_dict() if isinstance(model, nn.Module) else model
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
        at = self._step(tag, step, CHECKPOINT)
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
            codec = codec_for(type(record))
            if codec is None or codec.record is CheckpointState:
                takes = ", ".join(c.record.__name__ for c in codecs() if c.record is not CheckpointState)
                raise BadInputError(f"cannot log a {type(record).__name__}; log_records takes {takes}")
            kind = codec.kind
            self._check_tag(record.tag, kind)
            if claimed.setdefault(record.tag, kind) != kind:
                raise BadInputError(f"tag {record.tag!r} is given both {claimed[record.tag]} and {kind} records")
            checked.append(codec.check(record, now))
        return checked

    def _queued(self, checked: list[Record]) -> tuple[list[Any], int]:
        """What the writer is given for checked records, and its weight; each record's step becomes its tag's last."""
        items: list[Any] = []
        weight = 0
        for record in checked:
            if isinstance(record, Scalar):
                epoch = -1 if record.epoch is None else record.epoch
                step = self._step(record.tag, record.step, SCALAR)
                items.append((record.tag, step, epoch, record.wall_time, record.value))
                weight += 1
            else:
                codec = codec_for(type(record))
                assert codec is not None  # checked by _checked_records
                if codec.stepped:  # every kind but graphs has a step
                    self._step(record.tag, record.step, codec.kind)  # type: ignore[union-attr]
                else:
                    self._kinds[record.tag] = codec.kind
                items.append(record)
                weight += codec.weight(record)
        return items, weight

    def _per_rank(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """``values`` under this rank's own tags (``log(..., all_ranks=True)``)."""
        if not isinstance(values, Mapping):
            return values  # refused by log, saying what it takes
        return {tag_of(_check_name(tag), self.rank): value for tag, value in values.items()}

    def _check_tag(self, tag: object, kind: str) -> None:
        name = _check_name(tag)
        if self._ranks is not None and not self._idle and owner_of(name) != 0:  # rank 0 may not add to theirs
            raise BadInputError(
                f"tag {name!r} is rank {owner_of(name)}'s series of a distributed run: tags ending in /rank<k> are "
                "what log(..., all_ranks=True) stores for each rank; choose another tag"
            )
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

    def __init__(self, writer: Writer | None, stored: dict[str, Any]) -> None:
        self._writer = writer  # None: a rank other than 0, whose changes stay here
        self._values = dict(stored)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise BadInputError(f"config keys are str, not {type(key).__name__} ({key!r})")
        value = _plain(value)
        if self._writer is not None:
            self._writer.put([SetValue("config", key, json.dumps(value))], 1)
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        if self._writer is not None:
            self._writer.put([SetValue("config", key, None)], 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _check_name(tag: object) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise BadInputError(f"a tag is a non-empty str such as 'train/loss', not {tag!r}")
    return tag


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
