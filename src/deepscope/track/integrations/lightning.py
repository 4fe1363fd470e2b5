"""PyTorch Lightning: :class:`DeepscopeLogger` logs a ``Trainer``'s metrics and hyperparameters into a run.

>>> from deepscope.track.integrations.lightning import DeepscopeLogger
>>> trainer = Trainer(logger=DeepscopeLogger("runs", name="mnist", watch="all", every=100))  # runs/mnist/version_0

Needs ``lightning`` (or the older ``pytorch-lightning``): ``pip install lightning``.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import BadInputError
from ...store import schema
from ..records import HistogramKind
from ..run import Run, exit_status
from ..watch import KINDS, Watcher

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ModuleNotFoundError as error:
    if error.name is None or not error.name.startswith("lightning"):
        raise
    try:  # the package's older name, same API
        from pytorch_lightning import Callback, LightningModule, Trainer  # type: ignore[assignment]
        from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment  # type: ignore[assignment]
        from pytorch_lightning.utilities import rank_zero_only  # type: ignore[assignment]
    except ModuleNotFoundError:
        raise ImportError(
            "deepscope's Lightning logger needs PyTorch Lightning: pip install lightning "
            "(or pip install 'deepscope[integrations]')"
        ) from error

__all__ = ["DeepscopeLogger"]

# What ``watch=`` may name, besides an iterable of Watcher kinds (the names follow WandbLogger.watch's ``log``).
WATCH: dict[str, tuple[HistogramKind, ...]] = {
    "all": KINDS,
    "parameters": ("weight", "bias"),
    "gradients": ("gradient",),
    "activations": ("activation",),
}


class DeepscopeLogger(Logger):
    """A Lightning logger that writes into a :class:`deepscope.Run`, laid out as Lightning's ``TensorBoardLogger``.

    Where the run goes: ``save_dir/name/version_<n>``, with ``n`` the next free number, so running a script
    again makes ``version_1``, ``version_2``, ...:
        * ``DeepscopeLogger("runs")``: ``runs/lightning_logs/version_0`` (TensorBoardLogger's default name).
        * ``DeepscopeLogger("runs", name="mnist")``: ``runs/mnist/version_<n>``; ``name=""`` (or ``None``) puts the
          versions straight into ``runs``.
        * ``version=3`` or ``version="relu"``: ``runs/mnist/version_3`` or ``runs/mnist/relu``. A version that
          already holds a run is refused (a :class:`~deepscope.errors.BadInputError`) unless ``resume=True``.
        ``log_dir`` is the run directory; ``ModelCheckpoint`` (by default) saves into ``<log_dir>/checkpoints``.

    What is logged:
        * ``log_metrics``: everything ``self.log(...)`` produces, under the names given there, at Lightning's step
          (the number of optimizer steps so far); the ``"epoch"`` Lightning adds to each call becomes the points'
          epoch, not a series of its own.
        * ``log_hyperparams``: the module's ``save_hyperparameters()`` (and the data module's) into ``run.config``.
        * ``watch``: histograms of the LightningModule's weights, biases, gradients and/or activations every
          ``every`` optimizer steps (:meth:`deepscope.Run.watch`), numbered by ``trainer.global_step`` so that
          gradient accumulation counts one step per optimizer step. It starts when the trainer calls
          :meth:`log_graph` at the start of ``fit`` (with ``Trainer(enable_autolog_hparams=True)``, the default).
          Activations are recorded when ``training_step`` calls the module itself (``self(x)``).
        * ``graph=True``: the module's graph (:meth:`deepscope.Run.graph`), traced on its ``example_input_array``.

    The run is made on first use, in the process of rank 0 only. ``finalize`` (the end of ``fit``, ``validate``,
    ``test``) closes it: ``"finished"``, ``"interrupted"`` (Ctrl-C) or ``"failed"``; a later ``trainer.test(...)``
    with the same logger opens it again and adds to it.

    Args:
        save_dir: the folder that holds ``name/version``.
        name: the experiment's folder under ``save_dir``; ``""`` or ``None`` for none.
        version: the run's folder under ``name``: an int (``version_<int>``) or a str; the next free
            ``version_<n>`` if not given.
        watch: ``None`` (nothing), ``"all"``, ``"parameters"``, ``"gradients"``, ``"activations"``, or an
            iterable of :data:`deepscope.track.watch.KINDS`.
        every: record the watched histograms every this many optimizer steps.
        graph: store the module's graph at the start of ``fit`` (needs ``example_input_array``).
        resume: add to the run already at the run directory (a ``version`` given) instead of refusing it.

    Raises:
        BadInputError: a bad option, or a ``version`` whose directory already holds a run (without ``resume``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        *,
        watch: str | Iterable[HistogramKind] | None = None,
        every: int = 100,
        graph: bool = False,
        resume: bool = False,
    ) -> None:
        super().__init__()
        if version is not None and (isinstance(version, bool) or not isinstance(version, int | str)):
            raise BadInputError(f"version={version!r}: pass an int (version_<n>) or a str")
        self._kinds = _watch_kinds(watch)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise BadInputError(f"every={every!r}: pass a positive whole number of steps, e.g. every=100")
        self._save_dir = Path(save_dir).absolute()
        self._name = name or ""
        self._version = version
        self._every = every
        self._graph = graph
        self._resume = resume
        self._run: Run | None = None
        self._opened = False
        self._watching: tuple[list[Any], _WatchSteps] | None = None  # (the trainer's callbacks, ours)
        if version is not None and not resume and schema.db_path(Path(self.log_dir)).exists():
            raise BadInputError(
                f"version={version!r}: {self.log_dir} already holds a run. Leave version=None for the next free "
                "version_<n>, choose another version, or pass resume=True to add to that run"
            )

    # ---- where (TensorBoardLogger's attributes) ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The experiment's folder under ``save_dir`` (``""``: none)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The run's version: the one given, else the next free ``version_<n>`` number (chosen on first use)."""
        if self._version is None:
            self._version = _next_version(Path(self.root_dir))
        return self._version

    @property
    def save_dir(self) -> str:
        """The folder that holds ``name/version`` (Lightning's checkpoint callback builds its path from it)."""
        return str(self._save_dir)

    @property
    def root_dir(self) -> str:
        """``save_dir/name``: the folder of the experiment's versions."""
        return str(self._save_dir / self._name)

    @property
    def log_dir(self) -> str:
        """The run directory: ``root_dir/version_<n>``, or ``root_dir/<version>`` for a str version."""
        version = self.version
        return str(Path(self.root_dir) / (version if isinstance(version, str) else f"version_{version}"))

    # ---- the run -------------------------------------------------------------------------------------------------

    @property
    @rank_zero_experiment
    def experiment(self) -> Run:
        """The :class:`deepscope.Run`, made (or opened again after ``finalize``) on first use."""
        if self._run is None:
            self._run = Run(self.log_dir, resume=self._resume or self._opened)
            self._opened = True
        return self._run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        if epoch is not None:
            epoch = int(epoch.item() if isinstance(epoch, torch.Tensor) else epoch)
        if values:
            self.experiment.log(values, step=step, epoch=epoch)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        if params is None:
            return
        if not isinstance(params, Mapping):
            raise BadInputError(f"log_hyperparams takes a dict or an argparse.Namespace, not {type(params).__name__}")
        self.experiment.config.update(params)

    @rank_zero_only
    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        """Start watching ``model`` (if ``watch`` was given) and store its graph if there is an example input.

        The trainer calls this at the start of ``fit``; ``input_array`` defaults to ``model.example_input_array``
        when the logger was made with ``graph=True``.
        """
        run = self.experiment
        if input_array is None and self._graph:
            input_array = getattr(model, "example_input_array", None)
        if input_array is not None:
            run.graph(model, input_array)
        trainer = getattr(model, "_trainer", None) if isinstance(model, LightningModule) else None
        if self._kinds and self._watching is None and isinstance(trainer, Trainer):
            watcher = run.watch(model, every=self._every, kinds=self._kinds)
            # A logger sees no batches: a callback, added to this trainer for the length of the run, tells the
            # watcher which optimizer step each batch belongs to. finalize() takes it out again.
            steps = _WatchSteps(watcher)
            callbacks: list[Any] = trainer.callbacks  # type: ignore[attr-defined]  # set by Trainer.__init__
            callbacks.append(steps)
            self._watching = (callbacks, steps)

    @rank_zero_only
    def save(self) -> None:
        """Make what was logged so far visible to readers (the run's writer commits it now)."""
        if self._run is not None:
            self._run.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Close the run: ``"finished"``, or when Lightning says ``"failed"``, ``"interrupted"`` if the exception
        it is handling is a ``KeyboardInterrupt`` (Ctrl-C) and ``"failed"`` otherwise; the watcher ends with it."""
        if self._watching is not None:
            callbacks, steps = self._watching
            self._watching = None
            if steps in callbacks:
                callbacks.remove(steps)
        if self._run is not None:
            run, self._run = self._run, None
            run.close(exit_status(sys.exception() or Exception()) if status == "failed" else "finished")

    def __repr__(self) -> str:
        return f"DeepscopeLogger({self.log_dir!r})"


class _WatchSteps(Callback):
    """Numbers the watcher's steps by the trainer's optimizer steps (micro-batches of one step share it)."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.watcher.step(trainer.global_step)


def _watch_kinds(watch: str | Iterable[HistogramKind] | None) -> tuple[HistogramKind, ...]:
    if watch is None:
        return ()
    if isinstance(watch, str):
        if watch in WATCH:
            return WATCH[watch]
        if watch not in KINDS:
            raise BadInputError(f"watch={watch!r}: choose from {[None, *WATCH]} or a list of kinds from {KINDS}")
        return (watch,)  # type: ignore[return-value]
    kinds = tuple(watch)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise BadInputError(f"watch: unknown kind(s) {unknown}; choose from {list(KINDS)}")
    return kinds


def _next_version(folder: Path) -> int:
    """One more than the highest ``version_<n>`` in ``folder`` (0 if there is none)."""
    if not folder.is_dir():
        return 0
    numbers = [
        int(child.name[len("version_") :])
        for child in folder.iterdir()
        if child.is_dir() and child.name.startswith("version_") and child.name[len("version_") :].isdigit()
    ]
    return max(numbers, default=-1) + 1
