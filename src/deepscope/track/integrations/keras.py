"""Keras 3: :class:`DeepscopeCallback` logs ``model.fit`` and ``model.evaluate`` into a run, in place of
``keras.callbacks.TensorBoard``.

>>> import os; os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported
>>> from deepscope.track.integrations.keras import DeepscopeCallback
>>> model.fit(x, y, validation_data=(xv, yv), epochs=10, callbacks=[DeepscopeCallback("runs/keras", histogram_freq=1)])

Keras must run on its torch backend, which Keras reads from ``KERAS_BACKEND`` once, when it is first imported.
Importing this module before Keras sets ``KERAS_BACKEND=torch`` if it is not set; if it names another backend,
or Keras was already imported with another one, the import fails with an ``ImportError`` that says so.
Needs ``keras`` 3: ``pip install keras``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch

from ...errors import BadInputError
from ..histogram import check_bins, histogram
from ..records import HistogramKind
from ..run import Run

_INSTALL = "pip install keras (or pip install 'deepscope[integrations]')"


def _check_backend(backend: str) -> None:
    """Refuse a Keras that runs on anything but torch: the callback reads weights as torch tensors."""
    if backend != "torch":
        raise ImportError(
            f"deepscope's Keras callback needs Keras on its torch backend, but this Keras uses {backend!r}. "
            "Set KERAS_BACKEND=torch before keras is first imported (in the shell, or os.environ at the very top "
            "of the script)"
        )


if "keras" not in sys.modules:
    _wanted = os.environ.setdefault("KERAS_BACKEND", "torch")
    _check_backend(_wanted)  # before importing keras: afterwards the backend cannot change
try:
    import keras
except ModuleNotFoundError as error:
    if error.name != "keras":
        raise
    raise ImportError(f"deepscope's Keras callback needs Keras 3: {_INSTALL}") from error
if not hasattr(keras, "backend") or not hasattr(keras.backend, "backend"):
    raise ImportError(f"deepscope's Keras callback needs Keras 3, not keras {keras.__version__}: {_INSTALL}")
_check_backend(keras.backend.backend())

__all__ = ["DeepscopeCallback"]


class DeepscopeCallback(keras.callbacks.Callback):
    """Logs a Keras ``fit`` into a :class:`deepscope.Run`, with the tags ``keras.callbacks.TensorBoard`` writes.

    What is logged:
        * Per epoch, at step ``epoch``: the training values of ``logs`` as ``train/epoch_<name>`` (plus
          ``train/epoch_learning_rate``), the ``val_<name>`` values as ``validation/epoch_<name>``.
        * With ``update_freq="batch"`` or ``N``: ``train/batch_<name>`` after every (``N``-th) training batch, at
          step = the number of training batches so far in this callback's fits (what TensorBoard uses). Keras
          reports the epoch's running mean there, not the batch's own value.
        * At the start of ``fit``: ``run.config["optimizer"]`` (``optimizer.get_config()``) and
          ``run.config["fit"]`` (epochs, steps per epoch).
        * With ``histogram_freq=N``: a histogram of every weight of the model (``weight/<path>``, ``bias/<path>``)
          at the end of every ``N``-th epoch, at step ``epoch``, computed where the weight lives
          (:func:`deepscope.track.histogram.histogram`). With ``write_grads=True`` as well (the option of Keras 2's
          TensorBoard callback), the gradient of every trainable weight from the epoch's last training batch
          (``gradient/<path>``), as the optimizer received it.
        * With ``write_graph=True`` (the default, as TensorBoard's): at the start of the first ``fit``, the model's
          graph (:meth:`deepscope.Run.graph`, tag ``"model"``): its layers under their Keras names and types with
          their output shapes (channels first) and parameter counts, and the op graph where ``torch.export`` can
          trace it. Needs a model with one known input (``Sequential`` with an ``Input``, functional); another
          model's graph (subclassed, several inputs) is skipped with a warning, and the training goes on.
        * At the end of every evaluation, ``model.evaluate(..., callbacks=[callback])`` alone as well as ``fit``'s
          validation: its results as ``validation/evaluation_<name>_vs_iterations``, at step = the optimizer's
          iterations (the training batches the model has taken; 0 before any training), as TensorBoard does.
        * In an ``evaluate`` outside ``fit``, with ``update_freq="batch"`` or ``N``: the running results as
          ``validation/evaluation_batch_<name>`` after every (``N``-th) batch, at step = the number of such
          evaluation batches so far in this callback's evaluations.
        Every point of a ``fit`` also carries its epoch.

    The run is opened when ``fit`` (or an ``evaluate`` outside ``fit``) starts and closed when it ends; a later
    ``fit`` or ``evaluate`` with the same callback adds to the same run. A ``fit`` that raises leaves the run open
    until ``callback.run.close("failed")``, garbage collection or the interpreter's exit (Keras tells callbacks
    nothing about errors).

    Args:
        path: the run directory (as for ``ds.Run``).
        update_freq: ``"epoch"`` (no batch-level points), ``"batch"`` (every batch), or every ``N`` batches.
        histogram_freq: weight histograms every this many epochs; 0 for none.
        write_grads: with ``histogram_freq``, gradient histograms too.
        write_graph: store the model's graph when the first ``fit`` starts.
        bins: bins per histogram.
        resume: add to the run already at ``path`` instead of refusing it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        update_freq: Literal["epoch", "batch"] | int = "epoch",
        histogram_freq: int = 0,
        *,
        write_grads: bool = False,
        write_graph: bool = True,
        bins: int = 64,
        resume: bool = False,
    ) -> None:
        super().__init__()
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise BadInputError(f"update_freq={update_freq!r}: pass 'epoch', 'batch' or a positive number of batches")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise BadInputError(f"histogram_freq={histogram_freq!r}: pass 0 (none) or a positive number of epochs")
        if write_grads and not histogram_freq:
            raise BadInputError("write_grads=True logs gradients with the histograms: pass histogram_freq=N too")
        check_bins(bins)
        self.path = path
        self.update_freq: Literal["epoch"] | int = update_freq
        self.histogram_freq = histogram_freq
        self.write_grads = write_grads
        self.write_graph = write_graph
        self._graph_written = False
        self.bins = bins
        self._resume = resume
        self._opened = False
        self._run: Run | None = None
        self._batches = 0  # training batches seen by this callback, over all its fits
        self._test_batches = 0  # batches of evaluate() calls outside fit, over all of them
        self._epoch = 0
        self._fitting = False

    @property
    def run(self) -> Run:
        """The run being written (opened by ``fit``, or here if ``fit`` has not started it)."""
        if self._run is None:
            self._run = Run(self.path, resume=self._resume or self._opened)
            self._opened = True
        return self._run

    # ---- Keras' hooks --------------------------------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._fitting = True
        run = self.run
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            run.config["optimizer"] = {"class": type(optimizer).__name__, **optimizer.get_config()}
        run.config["fit"] = {key: value for key, value in (self.params or {}).items() if key != "verbose"}
        if self.write_graph and not self._graph_written:
            self._graph_written = True
            self._log_graph(run)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._batches += 1
        if self.update_freq == "epoch" or self._batches % self.update_freq or not logs:
            return
        self.run.log({f"train/batch_{name}": value for name, value in logs.items()}, self._batches, self._epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        values: dict[str, Any] = {}
        for name, value in (logs or {}).items():
            values[f"validation/epoch_{name[4:]}" if name.startswith("val_") else f"train/epoch_{name}"] = value
        rate = self._learning_rate()
        if rate is not None and "train/epoch_learning_rate" not in values:
            values["train/epoch_learning_rate"] = rate
        if values:
            run.log(values, step=epoch, epoch=epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            run.log_records(self._weight_histograms(epoch))
            if self.write_grads:
                run.log_records(self._gradient_histograms(epoch))

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._fitting = False
        self._close()

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.run  # noqa: B018 - an evaluate() outside fit opens the run here, before its first batch

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._fitting:  # fit's validation is logged per epoch
            return
        self._test_batches += 1
        if self.update_freq == "epoch" or self._test_batches % self.update_freq or not logs:
            return
        self.run.log({f"validation/evaluation_batch_{name}": value for name, value in logs.items()}, self._test_batches)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if logs:
            values = {f"validation/evaluation_{name}_vs_iterations": value for name, value in logs.items()}
            self.run.log(values, step=self._iterations(), epoch=self._epoch if self._fitting else None)
        if not self._fitting:  # an evaluate() on its own: everything it logged is stored when it returns
            self._close()

    def _close(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.close()

    # ---- what is logged ------------------------------------------------------------------------------------------

    def _iterations(self) -> int:
        """The training batches the model's optimizer has taken (what TensorBoard's callback uses as the step)."""
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        return 0 if iterations is None else int(keras.ops.convert_to_numpy(iterations))

    def _learning_rate(self) -> float | None:
        optimizer = getattr(self.model, "optimizer", None)
        rate = getattr(optimizer, "learning_rate", None)
        if rate is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(rate))
        except (TypeError, ValueError):  # a schedule object that is not a number
            return None

    def _log_graph(self, run: Run) -> None:
        try:
            inputs = self.model.inputs
        except AttributeError:  # a subclassed model: Keras knows no input shape to build an example from
            warnings.warn(
                f"{type(self.model).__name__} has no known inputs (a subclassed model), so its graph is not "
                "stored; pass write_graph=False to silence this, or call run.graph(model, example) yourself.",
                stacklevel=2,
            )
            return
        # one example of zeros per input, batch 1, in the model's own layout
        examples = [torch.zeros([1 if n is None else int(n) for n in tensor.shape]) for tensor in inputs]
        try:
            run.graph(self.model, examples[0] if len(examples) == 1 else tuple(examples))
        except BadInputError as error:  # a graph deepscope cannot draw must not stop the training
            warnings.warn(f"the model's graph is not stored: {error}", stacklevel=2)

    def _gradient_histograms(self, epoch: int) -> list[Any]:
        """The gradients Keras' torch trainer left in each trainable weight's ``.grad`` at the last batch."""
        records = []
        for weight in self.model.trainable_weights:
            grad = getattr(weight.value, "grad", None)
            if grad is None:  # not reached by the loss, or no batch trained yet
                continue
            layer = weight.path.rpartition("/")[0]
            records.append(
                histogram(grad, self.bins, tag=f"gradient/{weight.path}", layer=layer, kind="gradient", step=epoch)
            )
        return records

    def _weight_histograms(self, epoch: int) -> list[Any]:
        records = []
        for weight in self.model.weights:
            tensor = keras.ops.convert_to_tensor(weight)
            if not isinstance(tensor, torch.Tensor):  # pragma: no cover - the import checked the backend
                raise BadInputError(f"weight {weight.path!r} is a {type(tensor).__name__}, not a torch tensor")
            layer, _, name = weight.path.rpartition("/")
            kind: HistogramKind = "bias" if "bias" in name.lower() else "weight"
            records.append(
                histogram(tensor, self.bins, tag=f"{kind}/{weight.path}", layer=layer, kind=kind, step=epoch)
            )
        return records
