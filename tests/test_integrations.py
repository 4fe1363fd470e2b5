"""Lightning and Keras integrations: train tiny models, read the run back, compare with what the framework saw.

Each framework test skips when its package is not installed; the import checks run in any environment.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from deepscope.store import Reader

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": SRC, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)


# ---- optional packages -----------------------------------------------------------------------------------------


def test_importing_deepscope_imports_neither_framework() -> None:
    result = _python(
        "import sys, deepscope, deepscope.track.integrations as i; "
        "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'keras') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "hidden", "install"),
    [
        ("lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "pip install lightning"),
        ("keras", ("keras",), "pip install keras"),
    ],
)
def test_missing_framework_names_the_install(
    monkeypatch: pytest.MonkeyPatch, module: str, hidden: tuple[str, ...], install: str
) -> None:
    name = f"deepscope.track.integrations.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for package in hidden:
        monkeypatch.setitem(sys.modules, package, None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match=install):
        importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name, raising=False)


def _keras_integration() -> object:
    """The Keras integration module; skips without keras. (Importing keras itself first would pick its default
    backend, so the check looks for the package without importing it.)"""
    try:
        found = importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):  # a broken or blocked keras
        found = False
    if not found:
        pytest.skip("keras is not installed")
    return importlib.import_module("deepscope.track.integrations.keras")


def test_keras_on_another_backend_is_refused() -> None:
    integration = _keras_integration()
    result = _python("import deepscope.track.integrations.keras", KERAS_BACKEND="jax")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "KERAS_BACKEND=torch" in result.stderr
    with pytest.raises(ImportError, match="KERAS_BACKEND=torch"):
        integration._check_backend("tensorflow")


# ---- Lightning ---------------------------------------------------------------------------------------------------


def _lightning_module(lightning: object) -> type:
    class Tiny(lightning.LightningModule):  # type: ignore[name-defined,misc]
        def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            self.example_input_array = torch.zeros(2, 4)
            self.train_losses: list[tuple[int, int, float]] = []  # (global step, epoch, loss), seen here
            self.val_losses: list[tuple[int, float]] = []
            self.initial = {name: p.detach().clone() for name, p in self.named_parameters()}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            self.train_losses.append((self.global_step, self.current_epoch, loss.item()))
            return loss

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            self.log("val/loss", loss)
            if not self.trainer.sanity_checking:
                self.val_losses.append((self.current_epoch, loss.item()))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return Tiny


def _fit(lightning: object, logger: object, module: object, epochs: int = 2) -> object:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = lightning.Trainer(  # type: ignore[attr-defined]
        logger=logger,
        max_epochs=epochs,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        log_every_n_steps=1,
    )
    trainer.fit(module, loader, loader)
    return trainer


def test_lightning_logger_stores_what_the_module_logged(tmp_path: os.PathLike[str]) -> None:
    lightning = pytest.importorskip("lightning.pytorch")
    from deepscope.track.integrations.lightning import DeepscopeLogger

    torch.manual_seed(0)
    module = _lightning_module(lightning)(lr=0.05, hidden=8)
    logger = DeepscopeLogger(tmp_path, watch="all", every=3, graph=True)
    trainer = _fit(lightning, logger, module)
    assert logger.log_dir == str(tmp_path.absolute() / "lightning_logs" / "version_0")
    assert not trainer.callbacks or all(type(c).__name__ != "_WatchSteps" for c in trainer.callbacks)

    steps, epochs, losses = (np.array(column) for column in zip(*module.train_losses))
    with Reader(logger.log_dir) as reader:
        assert reader.info()["status"] == "finished"
        assert reader.config() == {"lr": 0.05, "hidden": 8}
        per_step = reader.scalars("train/loss_step")
        np.testing.assert_array_equal(per_step.steps, steps)
        np.testing.assert_array_equal(per_step.epochs, epochs)
        np.testing.assert_allclose(per_step.values, losses, rtol=1e-6)
        per_epoch = reader.scalars("train/loss_epoch")  # equal batches: the epoch's mean of its step losses
        np.testing.assert_array_equal(per_epoch.epochs, [0, 1])
        np.testing.assert_allclose(per_epoch.values, [losses[epochs == e].mean() for e in (0, 1)], rtol=1e-5)
        val = reader.scalars("val/loss")
        val_epochs, val_losses = (np.array(column) for column in zip(*module.val_losses))
        np.testing.assert_array_equal(val.epochs, [0, 1])
        np.testing.assert_allclose(val.values, [val_losses[val_epochs == e].mean() for e in (0, 1)], rtol=1e-5)
        assert "epoch" not in reader.tags()

        # watch: optimizer steps 0, 3, 6 (of 0..7), weights as the step starts: step 0 sees the initial weights
        first = reader.records("weight/net.0.weight")
        assert [h.step for h in first] == [0, 3, 6]
        initial = module.initial["net.0.weight"]
        assert (first[0].low, first[0].high) == pytest.approx((initial.min().item(), initial.max().item()))
        assert first[0].mean == pytest.approx(initial.mean().item(), abs=1e-7)
        for tag in ("gradient/net.0.weight", "activation/net.0", "bias/net.2.bias"):
            assert [h.step for h in reader.records(tag)] == [0, 3, 6], tag
        assert reader.tags()["model"] == "graph"


def test_lightning_layout_versions_and_reopening(tmp_path: os.PathLike[str]) -> None:
    lightning = pytest.importorskip("lightning.pytorch")
    from deepscope.track.integrations.lightning import DeepscopeLogger

    tiny = _lightning_module(lightning)
    first = DeepscopeLogger(tmp_path, name="exp")
    trainer = _fit(lightning, first, tiny(), epochs=1)
    second = DeepscopeLogger(tmp_path, name="exp")  # the script run again: the next version, not an error
    assert (first.version, second.version) == (0, 1)
    assert first.log_dir == str(tmp_path / "exp" / "version_0")
    assert (first.name, first.save_dir) == ("exp", str(tmp_path))
    # validate after fit: finalize closed the run, the logger opens it again and adds to it
    trainer.validate(trainer.lightning_module, trainer.val_dataloaders, verbose=False)
    with Reader(first.log_dir) as reader:
        assert len(reader.scalars("val/loss")) == 2
        assert reader.info()["status"] == "finished"
    _fit(lightning, second, tiny(), epochs=1)
    assert sorted(os.listdir(tmp_path / "exp")) == ["version_0", "version_1"]


@pytest.mark.parametrize(
    "where",
    [{}, {"name": "mnist"}, {"name": ""}, {"name": None}, {"name": "mnist", "version": 7}, {"version": "relu"}],
)
def test_lightning_layout_is_tensorboard_loggers(tmp_path: os.PathLike[str], where: dict[str, object]) -> None:
    """Name, version, root_dir and log_dir as Lightning's TensorBoardLogger has them, on the same folders: with
    none there, then with versions 0, 1 and 3 taken (the next free one is 4)."""
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    from deepscope.track.integrations.lightning import DeepscopeLogger

    root = os.path.join(tmp_path, "logs")
    for taken in ([], ["version_0", "version_1", "version_3", "version_x", "other"]):
        for folder in taken:
            for experiment in ("lightning_logs", "mnist", ""):
                os.makedirs(os.path.join(root, experiment, folder), exist_ok=True)
        ours, theirs = DeepscopeLogger(root, **where), TensorBoardLogger(root, **where)  # type: ignore[arg-type]
        assert (ours.name, ours.version) == (theirs.name, theirs.version), taken
        assert os.path.normpath(ours.root_dir) == os.path.normpath(theirs.root_dir)
        assert os.path.normpath(ours.log_dir) == os.path.normpath(theirs.log_dir)
        assert ours.save_dir == theirs.save_dir == root
    assert ours.version == where.get("version", 4)


@pytest.mark.filterwarnings("ignore:tag .train/loss_step.:UserWarning")  # the run resumed: steps start again
def test_lightning_explicit_version_that_holds_a_run_is_refused(tmp_path: os.PathLike[str]) -> None:
    lightning = pytest.importorskip("lightning.pytorch")
    from deepscope.errors import BadInputError
    from deepscope.track.integrations.lightning import DeepscopeLogger

    tiny = _lightning_module(lightning)
    _fit(lightning, DeepscopeLogger(tmp_path, name="exp", version="relu"), tiny(), epochs=1)
    with pytest.raises(BadInputError, match=r"version='relu': .*exp.relu already holds a run.*resume=True"):
        DeepscopeLogger(tmp_path, name="exp", version="relu")
    again = DeepscopeLogger(tmp_path, name="exp", version="relu", resume=True)
    _fit(lightning, again, tiny(), epochs=1)
    with Reader(again.log_dir) as reader:
        assert len(reader.scalars("val/loss")) == 2  # one epoch each, in one run
    assert DeepscopeLogger(tmp_path, name="exp").version == 0  # "relu" is no version_<n>


def test_lightning_ctrl_c_marks_the_run_interrupted(tmp_path: os.PathLike[str]) -> None:
    """Lightning catches Ctrl-C, tells its loggers "failed" and exits: the run says it was interrupted."""
    import signal

    lightning = pytest.importorskip("lightning.pytorch")
    from deepscope.track.integrations.lightning import DeepscopeLogger

    class Stopped(_lightning_module(lightning)):  # type: ignore[misc]
        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            if index == 2:
                raise KeyboardInterrupt
            return super().training_step(batch, index)

    class Broken(_lightning_module(lightning)):  # type: ignore[misc]
        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            raise RuntimeError("broken")

    stopped, broken = DeepscopeLogger(tmp_path), DeepscopeLogger(tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's own exit after a Ctrl-C
            _fit(lightning, stopped, Stopped())
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C from then on
    with pytest.raises(RuntimeError, match="broken"):
        _fit(lightning, broken, Broken())
    with Reader(stopped.log_dir) as reader:
        assert reader.info()["status"] == "interrupted"
        assert len(reader.scalars("train/loss_step")) == 2  # the steps before Ctrl-C
    with Reader(broken.log_dir) as reader:
        assert reader.info()["status"] == "failed"


def test_lightning_logger_bad_options(tmp_path: os.PathLike[str]) -> None:
    pytest.importorskip("lightning.pytorch")
    from deepscope.errors import BadInputError
    from deepscope.track.integrations.lightning import DeepscopeLogger

    with pytest.raises(BadInputError, match="watch="):
        DeepscopeLogger(tmp_path, watch="weights please")
    with pytest.raises(BadInputError, match="every="):
        DeepscopeLogger(tmp_path, watch="all", every=0)


# ---- Keras -------------------------------------------------------------------------------------------------------


def _keras_model() -> tuple[object, np.ndarray, np.ndarray]:
    """A compiled two-layer classifier and 64 samples (4 batches of 16)."""
    keras = sys.modules["keras"]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    return model, x, y


def _keras_fit(path: os.PathLike[str], **options: object) -> tuple[object, object]:
    from deepscope.track.integrations.keras import DeepscopeCallback

    model, x, y = _keras_model()
    callback = DeepscopeCallback(path, **options)
    history = model.fit(
        x, y, batch_size=16, epochs=2, validation_data=(x[:16], y[:16]), callbacks=[callback], verbose=0
    )
    return model, history


@pytest.mark.parametrize(("update_freq", "batch_steps"), [("epoch", []), ("batch", list(range(1, 9))), (3, [3, 6])])
def test_keras_callback_matches_history(tmp_path: os.PathLike[str], update_freq: object, batch_steps: list) -> None:
    _keras_integration()
    model, history = _keras_fit(tmp_path, update_freq=update_freq, histogram_freq=1)
    with Reader(tmp_path) as reader:
        assert reader.info()["status"] == "finished"
        for name, values in history.history.items():
            tag = f"validation/epoch_{name[4:]}" if name.startswith("val_") else f"train/epoch_{name}"
            series = reader.scalars(tag)
            np.testing.assert_array_equal(series.steps, [0, 1])
            np.testing.assert_array_equal(series.epochs, [0, 1])
            np.testing.assert_allclose(series.values, values, rtol=1e-6)
        np.testing.assert_allclose(reader.scalars("train/epoch_learning_rate").values, [0.01, 0.01], rtol=1e-6)
        config = reader.config()
        assert config["optimizer"]["class"] == "Adam"
        assert config["optimizer"]["learning_rate"] == pytest.approx(0.01)
        assert config["fit"]["epochs"] == 2
        for name in ("loss", "accuracy"):  # fit's validation, also as TensorBoard's evaluation-vs-iterations
            evaluation = reader.scalars(f"validation/evaluation_{name}_vs_iterations")
            assert evaluation.steps.tolist() == [4, 8] and evaluation.epochs.tolist() == [0, 1]
            np.testing.assert_allclose(evaluation.values, history.history[f"val_{name}"], rtol=1e-6)
        if batch_steps:
            batch = reader.scalars("train/batch_loss")
            np.testing.assert_array_equal(batch.steps, batch_steps)
            np.testing.assert_array_equal(batch.epochs, (np.array(batch_steps) - 1) // 4)  # 4 batches an epoch
        else:
            assert not [tag for tag in reader.tags() if "batch_" in tag]
        if update_freq == "batch":  # Keras reports the epoch's running mean: the last batch's is the epoch's
            np.testing.assert_allclose(batch.values[[3, 7]], history.history["loss"], rtol=1e-6)

        # the histograms of the last epoch describe the weights fit() ends with
        for weight in model.weights:
            kind = "bias" if weight.name == "bias" else "weight"
            records = reader.records(f"{kind}/{weight.path}")
            assert [h.step for h in records] == [0, 1]
            values = np.asarray(weight.numpy(), dtype=np.float64).ravel()
            last = records[-1]
            assert (last.low, last.high) == pytest.approx((values.min(), values.max()), rel=1e-6)
            expected, _ = np.histogram(values, bins=len(last.counts), range=(values.min(), values.max()))
            if values.min() == values.max():  # one value (the last layer's bias): histogram() puts it in bin 0
                expected = np.eye(len(last.counts), dtype=np.int64)[0] * len(values)
            np.testing.assert_array_equal(last.counts, expected)


def test_keras_evaluate_alone_is_logged_and_a_later_fit_adds_to_the_run(tmp_path: os.PathLike[str]) -> None:
    """``model.evaluate`` with the callback and no ``fit``: its results at step = optimizer iterations (0), its
    batches' running results with ``update_freq``, all stored when it returns; after a ``fit`` of 4 batches a
    second evaluation lands at step 4 of the same series. Values compared with what ``evaluate`` returned."""
    _keras_integration()
    from deepscope.track.integrations.keras import DeepscopeCallback

    model, x, y = _keras_model()
    callback = DeepscopeCallback(tmp_path, update_freq=2)
    first = model.evaluate(x, y, batch_size=16, callbacks=[callback], verbose=0, return_dict=True)
    with Reader(tmp_path) as reader:
        assert reader.info()["status"] == "finished"  # closed by evaluate() itself
        assert sorted(reader.tags()) == sorted(
            [f"validation/evaluation_{name}_vs_iterations" for name in first]
            + [f"validation/evaluation_batch_{name}" for name in first]
        )
        for name, value in first.items():
            series = reader.scalars(f"validation/evaluation_{name}_vs_iterations")
            assert series.steps.tolist() == [0] and series.epochs.tolist() == [-1]
            np.testing.assert_allclose(series.values, [value], rtol=1e-6)
        batches = reader.scalars("validation/evaluation_batch_loss")
        assert batches.steps.tolist() == [2, 4]  # every 2nd of the 4 batches
        np.testing.assert_allclose(batches.values[-1], first["loss"], rtol=1e-6)  # the running mean at the end

    model.fit(x, y, batch_size=16, epochs=1, callbacks=[callback], verbose=0)
    second = model.evaluate(x, y, batch_size=16, callbacks=[callback], verbose=0, return_dict=True)
    with Reader(tmp_path) as reader:
        series = reader.scalars("validation/evaluation_loss_vs_iterations")
        assert series.steps.tolist() == [0, 4]
        np.testing.assert_allclose(series.values, [first["loss"], second["loss"]], rtol=1e-6)
        assert second["loss"] != first["loss"]  # the fit changed the model: a new evaluation, not the old one
        assert reader.scalars("validation/evaluation_batch_loss").steps.tolist() == [2, 4, 6, 8]
        assert reader.scalars("train/epoch_loss").steps.tolist() == [0]


def test_keras_callback_bad_options(tmp_path: os.PathLike[str]) -> None:
    integration = _keras_integration()
    from deepscope.errors import BadInputError

    with pytest.raises(BadInputError, match="update_freq"):
        integration.DeepscopeCallback(tmp_path, update_freq="sometimes")
    with pytest.raises(BadInputError, match="histogram_freq"):
        integration.DeepscopeCallback(tmp_path, histogram_freq=-1)
    with pytest.raises(BadInputError, match=r"write_grads=True .* histogram_freq"):
        integration.DeepscopeCallback(tmp_path, write_grads=True)


def test_keras_callback_logs_gradients_and_the_graph(tmp_path: os.PathLike[str]) -> None:
    """``write_grads``: each epoch's last-batch gradients, checked against plain SGD's own step (the weights before
    and after it, divided by the learning rate); ``write_graph``: the Keras layers by name and type, read back."""
    _keras_integration()
    keras = sys.modules["keras"]
    from deepscope.track.integrations.keras import DeepscopeCallback

    model, x, y = _keras_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")

    class Steps(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        """The trainable weights around every batch; at each epoch's end, those of its last batch."""

        def __init__(self) -> None:
            super().__init__()
            self.last: list[list[tuple[np.ndarray, np.ndarray]]] = []

        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            self.before = [np.array(w.numpy(), dtype=np.float64) for w in model.trainable_weights]

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.after = [np.array(w.numpy(), dtype=np.float64) for w in model.trainable_weights]

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.last.append(list(zip(self.before, self.after, strict=True)))

    steps = Steps()
    callback = DeepscopeCallback(tmp_path, histogram_freq=1, write_grads=True)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, callbacks=[callback, steps], verbose=0)
    with Reader(tmp_path) as reader:
        for epoch, pairs in enumerate(steps.last):
            for weight, (before, after) in zip(model.trainable_weights, pairs, strict=True):
                grad = (before - after) / 0.5
                record = reader.records(f"gradient/{weight.path}")[epoch]
                assert record.step == epoch and record.kind == "gradient" and record.count == grad.size
                assert (record.low, record.high) == pytest.approx((grad.min(), grad.max()), rel=1e-3, abs=1e-6)
                assert record.mean == pytest.approx(grad.mean(), rel=1e-3, abs=1e-6)
                assert np.abs(grad).max() > 0
        (graph,) = reader.records("model")
        rows = {row["name"]: row for row in graph.modules}
        assert list(rows) == ["", *(layer.name for layer in model.layers)]
        assert [rows[layer.name]["type"] for layer in model.layers] == ["Dense", "Dense"]
        assert [rows[layer.name]["shape"] for layer in model.layers] == [[1, 8], [1, 1]]
        assert rows[""]["params"] == model.count_params()


def test_keras_callback_skips_the_graph_of_a_subclassed_model(tmp_path: os.PathLike[str]) -> None:
    integration = _keras_integration()
    keras = sys.modules["keras"]

    class Net(keras.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, inputs: object) -> object:
            return self.dense(inputs)

    model = Net()
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 2), dtype="float32")
    with pytest.warns(UserWarning, match="no known inputs"):
        model.fit(x, x[:, :1], epochs=1, callbacks=[integration.DeepscopeCallback(tmp_path)], verbose=0)
    with Reader(tmp_path) as reader:
        assert "model" not in reader.tags()
