"""``ds.Run``: what it accepts, what it refuses, what it stores, and how a run ends, checked through the Reader
and against TensorBoard's own writer and reader."""

from __future__ import annotations

import gc
import math
import multiprocessing
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import deepscope as ds
from deepscope.errors import StoreError
from deepscope.store import Reader
from deepscope.store.reader import writer_alive
from deepscope.track import Graph, Histogram, Image, Scalar, Text
from deepscope.track.records import ComparisonTable, Confusion, ExplanationSet, FaithfulnessCurves, SanityCurves

VALUES = {
    "float": (0.25, 0.25),
    "int": (3, 3.0),
    "bool": (True, 1.0),
    "numpy float32": (np.float32(0.1), float(np.float32(0.1))),
    "numpy int": (np.int64(7), 7.0),
    "0-d tensor": (torch.tensor(1.5), 1.5),
    "one-element tensor": (torch.tensor([2.5], requires_grad=True), 2.5),
    "float16 tensor": (torch.tensor(0.1, dtype=torch.float16), float(torch.tensor(0.1, dtype=torch.float16))),
    "nan": (float("nan"), float("nan")),
    "inf": (float("inf"), float("inf")),
    "-inf tensor": (torch.tensor(-float("inf")), -float("inf")),
    "nan tensor": (torch.tensor(float("nan")), float("nan")),
}


def test_every_kind_of_number_is_stored_as_logged_nonfinite_included(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        for step in range(3):
            run.log({name: value for name, (value, _) in VALUES.items()}, step=step)
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == dict.fromkeys(sorted(VALUES), "scalar")
        for name, (_, expected) in VALUES.items():
            series = reader.scalars(name)
            np.testing.assert_array_equal(series.steps, [0, 1, 2])
            np.testing.assert_array_equal(series.values, [expected] * 3, err_msg=name)  # NaN equals NaN here


def test_steps_continue_per_tag_epochs_and_wall_times_are_kept(tmp_path):
    start = time.time()
    with ds.Run(tmp_path / "r") as run:
        for epoch in range(2):
            for _ in range(3):
                run.log({"train/loss": 1.0}, epoch=epoch)
            run.log({"val/loss": 2.0}, epoch=epoch)
        run.log({"train/loss": 0.5}, step=100)
        run.log({"train/loss": 0.4})
    end = time.time()
    with Reader(tmp_path / "r") as reader:
        train, val = reader.scalars("train/loss"), reader.scalars("val/loss")
    assert train.steps.tolist() == [0, 1, 2, 3, 4, 5, 100, 101]
    assert train.epochs.tolist() == [0, 0, 0, 1, 1, 1, -1, -1]
    assert val.steps.tolist() == [0, 1] and val.epochs.tolist() == [0, 1]
    assert (np.diff(train.wall_times) >= 0).all() and start <= train.wall_times[0] and train.wall_times[-1] <= end


BAD_VALUES = {
    "a string": ({"loss": "0.3"}, {}, "cannot log a str"),
    "None": ({"loss": None}, {}, "cannot log a NoneType"),
    "a vector": ({"loss": torch.ones(3)}, {}, "has shape \\[3\\]. Reduce it"),
    "a complex tensor": ({"loss": torch.tensor(1j)}, {}, "complex"),
    "a tag that is not a str": ({3: 1.0}, {}, "a tag is a non-empty str"),
    "an empty tag": ({" ": 1.0}, {}, "a tag is a non-empty str"),
    "a negative step": ({"loss": 1.0}, {"step": -1}, "step must be a whole number >= 0"),
    "a float step": ({"loss": 1.0}, {"step": 1.5}, "step must be a whole number"),
    "a negative epoch": ({"loss": 1.0}, {"epoch": -2}, "epoch must be a whole number >= 0"),
    "a list, not a mapping": ([1.0], {}, "takes a mapping of tag to value"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_a_clear_error_and_nothing_of_the_call_is_stored(tmp_path, case):
    values, options, message = BAD_VALUES[case]
    with ds.Run(tmp_path / "r") as run:
        run.log({"other": 1.0}, step=0)
        with pytest.raises(ds.BadInputError, match=message):
            run.log({"other": 2.0, **values} if isinstance(values, dict) else values, **options)
        run.log({"other": 3.0})
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"other": "scalar"}
        assert reader.scalars("other").values.tolist() == [1.0, 3.0]
        assert reader.scalars("other").steps.tolist() == [0, 1]


def histogram(tag: str, step: int = 0, counts=None) -> Histogram:
    counts = np.array([1, 4, 2], dtype=np.int64) if counts is None else counts
    return Histogram(tag, step, -1.0, 1.0, counts, layer="fc", kind="weight", mean=0.1, std=0.5, count=7)


def test_a_tag_keeps_its_kind_also_across_resume(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
        run.log_records([histogram("weights")])
        with pytest.raises(ds.BadInputError, match="tag 'loss' holds scalar values; it cannot take a histogram"):
            run.log_records([histogram("loss")])
        with pytest.raises(ds.BadInputError, match="tag 'weights' holds histogram values; it cannot take a scalar"):
            run.log({"weights": 1.0})
        with pytest.raises(ds.BadInputError, match="'new' is given both scalar and histogram records"):
            run.log_records([Scalar("new", 1.0, 0), histogram("new")])
    with ds.Run(tmp_path / "r", resume=True) as run:
        with pytest.raises(ds.BadInputError, match="holds histogram values"):
            run.log({"weights": 2.0})
        with pytest.raises(ds.BadInputError, match="log_records takes Scalar, Histogram"):
            run.log_records([{"tag": "x"}])


def test_a_step_going_backwards_warns_once_per_tag_and_keeps_every_point(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        for step in [0, 1, 2, 3]:
            run.log({"loss": float(step)}, step=step)
        with pytest.warns(UserWarning, match="tag 'loss': step 1 after step 3: the steps went backwards"):
            run.log({"loss": 10.0}, step=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run.log({"loss": 11.0}, step=0)  # said once already
            run.log({"other": 1.0}, step=5)
        with pytest.warns(UserWarning, match="'series': step 2 after step 4"):
            run.log_series("series", np.array([3, 4, 2]), np.zeros(3))
    with Reader(tmp_path / "r") as reader:
        loss = reader.scalars("loss")
    assert loss.steps.tolist() == [0, 1, 2, 3, 1, 0] and loss.values.tolist() == [0, 1, 2, 3, 10, 11]


def test_config_is_dict_like_stored_and_back_on_resume(tmp_path):
    config = {"lr": 1e-3, "layers": (64, 32), "optimizer": torch.optim.Adam, "device": torch.device("cpu")}
    with ds.Run(tmp_path / "r", config=config) as run:
        run.config["batch"] = 128
        run.config["mean"] = torch.tensor([0.5, 0.25])
        run.config["nested"] = {"a": {"b": np.float32(0.5)}}
        del run.config["device"]
        assert dict(run.config) == {
            "lr": 1e-3,
            "layers": [64, 32],
            "optimizer": str(torch.optim.Adam),
            "batch": 128,
            "mean": [0.5, 0.25],
            "nested": {"a": {"b": 0.5}},
        }
        expected = dict(run.config)
    with Reader(tmp_path / "r") as reader:
        assert reader.config() == expected
    with ds.Run(tmp_path / "r", resume=True, config={"lr": 1e-4}) as run:
        assert run.config["lr"] == 1e-4 and run.config["batch"] == 128
    with Reader(tmp_path / "r") as reader:
        assert reader.config()["lr"] == 1e-4


def test_resume_continues_each_tags_steps(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        for _ in range(5):
            run.log({"a": 1.0})
        run.log_series("b", np.arange(5000), np.ones(5000))  # through a full chunk
        run.note("first")
    with ds.Run(tmp_path / "r", resume=True) as run:
        run.log({"a": 2.0, "b": 2.0})
        run.note("second")
    with Reader(tmp_path / "r") as reader:
        assert reader.scalars("a").steps.tolist() == [0, 1, 2, 3, 4, 5]
        assert reader.scalars("b").steps[-2:].tolist() == [4999, 5000]
        assert [(t.step, t.text) for t in reader.records("notes")] == [(0, "first"), (1, "second")]


def test_records_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rng.random((4, 4))
    graph = Graph(modules=[{"name": "", "type": "MLP"}], ops=None, ops_method="unavailable: test", notes=["n"])
    records = [
        histogram("w", 0),
        histogram("w", 10, counts=np.array([0.5, np.nan, 2.0])),
        Scalar("s", float("inf"), 3, epoch=1, wall_time=123.0),
        Text("notes", "héllo\nworld", 2),
        Image("img", 0, pixels, caption="rgb"),
        Image("img", 1, gray),
        graph,
    ]
    with ds.Run(tmp_path / "r") as run:
        run.log_records(records)
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"img": "image", "model": "graph", "notes": "text", "s": "scalar", "w": "histogram"}
        w = reader.records("w")
        assert [h.step for h in w] == [0, 10] and w[0].counts.dtype == np.int64 and w[1].counts.dtype == np.float64
        np.testing.assert_array_equal(w[1].counts, [0.5, np.nan, 2.0])
        assert (w[0].low, w[0].high, w[0].layer, w[0].kind, w[0].mean, w[0].count) == (-1, 1, "fc", "weight", 0.1, 7)
        assert math.isnan(w[0].zero_fraction)
        s = reader.scalars("s")
        assert (s.steps.tolist(), s.values.tolist(), s.epochs.tolist(), s.wall_times.tolist()) == (
            [3],
            [float("inf")],
            [1],
            [123.0],
        )
        (note,) = reader.records("notes")
        assert (note.text, note.step) == ("héllo\nworld", 2)
        rgb, g = reader.records("img")
        np.testing.assert_array_equal(rgb.pixels, pixels)
        assert rgb.caption == "rgb"
        np.testing.assert_array_equal(g.pixels, np.round(gray * 255).astype(np.uint8))
        assert reader.records("model") == [graph]
        assert [h.step for h in reader.records("w", start=5)] == [10]
        assert [h.step for h in reader.records("w", end=5)] == [0]
    assert len(list((tmp_path / "r" / "files").rglob("*.png"))) == 2


@pytest.mark.parametrize(
    "record, message",
    [
        (Image("i", 0, np.zeros((2, 2, 2), np.uint8)), "an image is \\[H, W\\]"),
        (Image("i", 0, np.full((2, 2), 2.0)), "float pixels must lie in \\[0, 1\\]"),
        (Histogram("h", 0, 0.0, 1.0, np.ones((2, 2))), "counts must be a 1-D numeric array"),
        (Text("t", b"bytes"), "must be a str"),  # type: ignore[arg-type]
        (Scalar("s", 1.0, -3), "step must be a whole number >= 0"),
    ],
)
def test_bad_records_are_refused(tmp_path, record, message):
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match=message):
        run.log_records([Scalar("fine", 1.0, 0), record])
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {}


def test_a_closed_run_refuses_more_and_close_twice_is_fine(tmp_path):
    run = ds.Run(tmp_path / "r")
    run.log({"a": 1.0})
    run.close()
    run.close()
    assert run.closed and not writer_alive(tmp_path / "r")
    with pytest.raises(StoreError, match="is closed; open it again with resume=True"):
        run.log({"a": 2.0})
    with Reader(tmp_path / "r") as reader:
        assert reader.info()["status"] == "finished"


def test_an_exception_in_the_with_block_marks_the_run_failed_and_is_not_swallowed(tmp_path):
    with pytest.raises(ZeroDivisionError), ds.Run(tmp_path / "r") as run:
        run.log({"a": 1.0})
        1 / 0
    with Reader(tmp_path / "r") as reader:
        assert reader.info()["status"] == "failed"
        assert "ZeroDivisionError" in reader.records("run/error")[0].text
        assert len(reader.scalars("a")) == 1


FORGOTTEN = """
import sys
import deepscope as ds
run = ds.Run(sys.argv[1], flush_interval=60)
for i in range(1000):
    run.log({"loss": float(i)}, step=i)
# no close(), no flush(): the interpreter's exit must still store everything
"""


def test_a_forgotten_close_still_stores_everything(tmp_path):
    subprocess.run([sys.executable, "-c", FORGOTTEN, str(tmp_path / "exit")], check=True, timeout=60)
    run = ds.Run(tmp_path / "gc", flush_interval=60)
    run.log({"loss": 1.0})
    del run
    gc.collect()
    for name, points in (("exit", 1000), ("gc", 1)):
        assert not writer_alive(tmp_path / name)
        with Reader(tmp_path / name) as reader:
            assert len(reader.scalars("loss")) == points
            assert reader.info()["status"] == "finished"


def _log_in_child(run: ds.Run, queue: multiprocessing.Queue) -> None:
    try:
        run.log({"child": 1.0})
        queue.put("logged")
    except StoreError as e:
        queue.put(str(e))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_cannot_log_into_its_parents_run(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        run.log({"parent": 1.0})
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with a thread running (Python >= 3.12)
            child = context.Process(target=_log_in_child, args=(run, queue))
            child.start()
        child.join(30)
        assert "belongs to process" in queue.get(timeout=5)
        run.log({"parent": 2.0})
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"parent": "scalar"} and len(reader.scalars("parent")) == 2


def test_scalars_match_what_tensorboard_stores_and_reads(tmp_path):
    tensorboard = pytest.importorskip("tensorboard")
    del tensorboard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    values = rng.normal(size=500) * 10.0 ** rng.integers(-5, 5, 500)
    values[[7, 8, 9]] = [np.nan, np.inf, -np.inf]
    steps = np.cumsum(rng.integers(1, 5, 500))
    writer = SummaryWriter(str(tmp_path / "tb"))
    with ds.Run(tmp_path / "ds") as run:
        for step, value in zip(steps.tolist(), values.tolist()):
            writer.add_scalar("train/loss", value, step)
            run.log({"train/loss": value}, step=step)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    theirs = events.Scalars("train/loss")
    with Reader(tmp_path / "ds") as reader:
        ours = reader.scalars("train/loss")
    assert ours.steps.tolist() == [e.step for e in theirs]
    # TensorBoard keeps float32; we keep the float64 that was logged, so ours rounds to theirs.
    np.testing.assert_array_equal(ours.values.astype(np.float32), np.array([e.value for e in theirs], np.float32))
    np.testing.assert_array_equal(ours.values, values)
    assert np.abs(ours.wall_times - np.array([e.wall_time for e in theirs])).max() < 1.0


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_watch_and_graph_go_through_the_store(tmp_path):
    pytest.importorskip("deepscope.track.watch")
    pytest.importorskip("deepscope.track.graph")
    torch.manual_seed(0)
    model = MLP().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    initial = model.fc1.weight.detach().clone()
    with ds.Run(tmp_path / "r") as run:
        graph = run.graph(model, x)
        run.watch(model, every=2)
        for step in range(5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            run.log({"train/loss": loss}, step=step)
    with Reader(tmp_path / "r") as reader:
        tags = reader.tags()
        assert reader.records("model") == [graph]
        assert tags["weight/fc1.weight"] == tags["gradient/fc2.bias"] == tags["activation/act"] == "histogram"
        weights = reader.records("weight/fc1.weight")
        assert [h.step for h in weights] == [0, 2, 4]  # the last step is written when the run closes
        # closed forms: every element lands in a bin, and the statistics are those of the parameter itself
        assert all(h.counts.sum() == 32 == h.count for h in weights)
        assert weights[0].mean == pytest.approx(initial.mean().item(), abs=1e-6)
        assert weights[0].norm == pytest.approx(initial.norm().item(), rel=1e-5)
        assert len(reader.scalars("train/loss")) == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_values_are_read_without_waiting_and_as_they_were_when_logged(tmp_path):
    loss = torch.tensor(1.0, device="cuda")
    big = torch.randn(4096, 4096, device="cuda")
    with ds.Run(tmp_path / "r") as run:
        for step in range(50):
            _ = big @ big  # keep the GPU busy so that the copy is still queued when log returns
            run.log({"loss": loss, "count": torch.tensor(step, device="cuda"), "cpu": 0.5}, step=step)
            loss.add_(1.0)  # changed in place after logging: what was logged must not change
    with Reader(tmp_path / "r") as reader:
        np.testing.assert_array_equal(reader.scalars("loss").values, np.arange(1.0, 51.0))
        np.testing.assert_array_equal(reader.scalars("count").values, np.arange(50.0))
        assert reader.scalars("count").steps.tolist() == list(range(50))


# ---- evaluation results and explanations ---------------------------------------------------------------------------


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def test_confusion_matrices_and_pr_curves_from_evaluate_round_trip(tmp_path):
    from deepscope.evaluate.classification import binary_report, confusion_matrix
    from deepscope.track.tensorboard import pr_curve

    matrix = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], classes=["a", "b", "c"])
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 50), rng.random(50)
    with ds.Run(tmp_path / "r") as run:
        run.log_confusion_matrix(matrix)
        run.log_confusion_matrix(matrix)  # the tag counts on: step 1
        run.log_pr_curve(binary_report(labels, scores), step=4, num_thresholds=11)
        run.log_pr_curve(binary_report(labels, 3 * scores - 1), tag="logits")  # beyond [0, 1]
    with Reader(tmp_path / "r") as reader:
        first, second = reader.records("confusion_matrix")
        assert (first.step, second.step, first.classes) == (0, 1, ["a", "b", "c"])
        np.testing.assert_array_equal(first.counts, matrix.counts.numpy())
        (curve,) = reader.records("pr_curve")
        # On scores in [0, 1] the counts are TensorBoard's add_pr_curve counts (up to its float bucketing).
        expected = pr_curve("pr_curve", labels, scores, num_thresholds=11)
        for name in ("thresholds", "tp", "fp", "tn", "fn", "precision", "recall"):
            np.testing.assert_allclose(getattr(curve, name), getattr(expected, name), err_msg=name)
        (logits,) = reader.records("logits")
        assert logits.thresholds[0] == pytest.approx(scores.min() * 3 - 1)
        assert logits.thresholds[-1] == pytest.approx(scores.max() * 3 - 1)
        np.testing.assert_array_equal(logits.tp + logits.fn, np.full(127, labels.sum()))
        assert logits.tp[0] == labels.sum() and logits.fp[0] == len(labels) - labels.sum()


def test_explanations_of_several_methods_round_trip_as_pictures(tmp_path):
    from deepscope import render

    model = _tiny_cnn().eval()
    inputs = torch.rand(3, 3, 8, 8)
    found = [ds.explain(model, inputs, method=m) for m in ("saliency", "gradcam")]
    with ds.Run(tmp_path / "r") as run:
        stored = run.log_explanations(
            found, labels=torch.tensor([0, 1, 2]), predictions=["b", "b", "c"], classes=["a", "b", "c"]
        )
    with Reader(tmp_path / "r") as reader:
        (back,) = reader.records("explanations")
    assert back.methods == ["saliency", "gradcam"] and back.labels == ["a", "b", "c"]
    assert back.predictions == ["b", "b", "c"]
    predicted = model(inputs).argmax(1).tolist()
    assert back.targets == [[["a", "b", "c"][k] for k in predicted]] * 2  # target=None: the predicted class
    np.testing.assert_allclose(back.scores, np.stack([e.scores.numpy() for e in found]), rtol=1e-6)
    for name in ("inputs", "heatmaps", "overlays"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stored, name), err_msg=name)
    assert back.overlays.shape == (2, 3, 8, 8, 3)
    np.testing.assert_array_equal(back.overlays[1, 2], np.asarray(found[1].overlay(2)))
    np.testing.assert_array_equal(back.inputs[0], np.round(render.to_image_array(inputs[0]) * 255).astype(np.uint8))
    assert len(list((tmp_path / "r" / "files").rglob("*.png"))) == 3 * (1 + 2 * 2)


@pytest.mark.parametrize(
    "case, message",
    [
        ("other inputs", "explains other inputs"),
        ("not images", "shows images"),
        ("labels", "2 labels for 3 inputs"),
        ("class out of range", "outside 0..2"),
        ("not an explanation", "pass what ds.explain returns"),
    ],
)
def test_bad_explanations_are_refused_before_drawing(tmp_path, case, message):
    model = _tiny_cnn().eval()
    x = torch.rand(3, 3, 8, 8)
    given: dict = {"explanations": ds.explain(model, x, method="saliency")}
    if case == "other inputs":
        given["explanations"] = [given["explanations"], ds.explain(model, x + 1, method="saliency")]
    elif case == "not images":
        mlp = nn.Sequential(nn.Linear(4, 3))
        given["explanations"] = ds.explain(mlp, torch.rand(3, 4), method="saliency")
    elif case == "labels":
        given["labels"] = [0, 1]
    elif case == "class out of range":
        given.update(labels=[0, 1, 5], classes=["a", "b", "c"])
    else:
        given["explanations"] = "saliency"
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match=message):
        run.log_explanations(**given)
    assert not (tmp_path / "r" / "files").exists()


@pytest.mark.parametrize(
    "record, message",
    [
        (Confusion("c", 0, np.ones((2, 3)), ["a", "b"]), "numeric \\[K, K\\] array"),
        (Confusion("c", 0, np.array([[1, -1], [0, 2]]), ["a", "b"]), "whole numbers >= 0"),
        (Confusion("c", 0, np.array([[1.5, 0], [0, 2]]), ["a", "b"]), "whole numbers >= 0"),
        (Confusion("c", 0, np.eye(2), ["a"]), "one class name per row"),
        (
            ExplanationSet(
                "e",
                0,
                np.zeros((2, 4, 4, 3), np.uint8),
                ["m"],
                np.zeros((1, 2, 4, 4, 3), np.uint8),
                np.zeros((1, 2, 4, 3), np.uint8),
                [["x", "y"]],
                np.zeros((1, 2)),
            ),
            "overlays are uint8",
        ),
        (
            ExplanationSet(
                "e",
                0,
                np.zeros((2, 4, 4, 3), np.uint8),
                ["m"],
                np.zeros((1, 2, 4, 4, 3), np.uint8),
                np.zeros((1, 2, 4, 4, 3), np.uint8),
                [["x"]],
                np.zeros((1, 2)),
            ),
            "one per method and input",
        ),
    ],
)
def test_bad_confusion_and_explanation_records_are_refused(tmp_path, record, message):
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match=message):
        run.log_records([Scalar("fine", 1.0, 0), record])
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {}


# ---- sanity checks, faithfulness and method comparisons -------------------------------------------------------------


def _broken(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    raise ds.BadInputError("needs a <b>bigger</b> model")


@pytest.fixture(scope="module")
def trust_results():
    """A sanity check, deletion and insertion results and a method comparison (one method failing) of a tiny CNN."""
    model = _tiny_cnn().eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    check = ds.sanity_check(model, x, methods=["saliency", "gradcam"])
    explained = [ds.explain(model, x, method=m) for m in ("saliency", "gradcam")]
    deletion = [ds.faithfulness(model, x, e, steps=6) for e in explained]
    insertion = {"grad": ds.faithfulness(model, x, explained[0].heatmap, metric="insertion", steps=6)}
    comparison = ds.compare_methods(model, x, methods=["saliency", _broken], random=False, steps=4, progress=False)
    return check, deletion, insertion, comparison


def test_sanity_faithfulness_and_comparison_round_trip_exactly(tmp_path, trust_results):
    check, deletion, insertion, comparison = trust_results
    with ds.Run(tmp_path / "r") as run:
        run.log_sanity_check(check)
        run.log_sanity_check(check)  # the tag counts on: step 1
        run.log_faithfulness(deletion, step=5)
        run.log_faithfulness(insertion, tag="faithfulness/insertion")
        run.log_method_comparison(comparison)
    with Reader(tmp_path / "r") as reader:
        assert reader.tags("sanity_check") == {"sanity_check": "sanity_check"}
        first, second = reader.records("sanity_check")
        assert (first.step, second.step, first.mode) == (0, 1, "cascading")
        assert (first.methods, first.stages, first.inputs) == (check.methods, check.steps, 3)
        assert first.metrics == ["spearman", "spearman_abs", "ssim", "hog"]
        for method in check.methods:
            for metric in first.metrics:
                scores = check.scores[method][metric].numpy().astype(np.float64)  # [steps, N]
                np.testing.assert_array_equal(first.mean[method][metric], scores.mean(axis=1))
                np.testing.assert_array_equal(first.std[method][metric], scores.std(axis=1))  # as .figure() draws
        assert first.mean["saliency"]["spearman"][0] == 1.0  # the original map compared with itself
        (faith,) = reader.records("faithfulness")
        assert (faith.step, faith.metric, faith.methods, faith.inputs) == (5, "deletion", ["saliency", "gradcam"], 3)
        np.testing.assert_array_equal(faith.fractions, deletion[0].fractions.numpy().astype(np.float64))
        for i, result in enumerate(deletion):
            curves = result.curves.numpy().astype(np.float64)
            np.testing.assert_array_equal(faith.mean[i], curves.mean(axis=0))
            np.testing.assert_array_equal(faith.std[i], curves.std(axis=0))
            assert faith.auc[i] == float(result.auc.mean())
        (inserted,) = reader.records("faithfulness/insertion")
        assert (inserted.metric, inserted.methods) == ("insertion", ["grad"])
        (table,) = reader.records("method_comparison")
        assert table.methods == [row.method for row in comparison.rows] == ["saliency", "_broken"]
        assert table.errors == [None, "needs a <b>bigger</b> model"]
        assert table.metrics == ["deletion", "insertion", "sanity"] and table.sort_by == "deletion"
        row = comparison.rows[0]
        assert table.mean[0].tolist() == [row.deletion, row.insertion, row.sanity]
        spread = [comparison.aucs["saliency"][m].numpy().astype(np.float64).std() for m in table.metrics]
        assert table.std[0].tolist() == spread
        assert np.isnan(table.mean[1]).all() and np.isnan(table.std[1]).all()


@pytest.mark.parametrize(
    "call, message",
    [
        ("log_sanity_check", "expected a deepscope.evaluate.SanityCheck"),
        ("log_method_comparison", "expected a deepscope.evaluate.MethodComparison"),
        ("log_faithfulness", "pass what ds.faithfulness returns"),
    ],
)
def test_logging_something_else_as_an_evaluation_result_is_refused(tmp_path, call, message):
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match=message):
        getattr(run, call)(torch.zeros(3))


def test_faithfulness_results_must_be_named_and_alike(tmp_path, trust_results):
    _, deletion, insertion, _ = trust_results
    with ds.Run(tmp_path / "r") as run:
        with pytest.raises(ds.BadInputError, match="no method name"):
            run.log_faithfulness(list(insertion.values()))
        with pytest.raises(ds.BadInputError, match="log one metric"):
            run.log_faithfulness({"a": deletion[0], "b": insertion["grad"]})
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {}


@pytest.mark.parametrize(
    "record, message",
    [
        (SanityCurves("s", 0, "cascading", ["m"], ["original", "fc"], ["spearman"], {"m": {}}, {}, 2), "one curve"),
        (
            SanityCurves(
                "s",
                0,
                "cascading",
                ["m"],
                ["original"],
                ["spearman"],
                {"m": {"spearman": [1, 2]}},
                {"m": {"spearman": [0, 0]}},
                2,
            ),
            "one value per step",
        ),
        (
            FaithfulnessCurves(
                "f", 0, "deletion", ["m"], np.linspace(0, 1, 3), np.ones((1, 2)), np.ones((1, 2)), np.ones(1), 2
            ),
            "one per method",
        ),
        (
            FaithfulnessCurves(
                "f", 0, "other", ["m"], np.linspace(0, 1, 3), np.ones((1, 3)), np.ones((1, 3)), np.ones(1), 2
            ),
            "'deletion' or 'insertion'",
        ),
        (ComparisonTable("c", 0, ["deletion"], "sanity", ["m"], np.ones((1, 1)), np.ones((1, 1)), [None]), "sort_by"),
        (
            ComparisonTable("c", 0, ["deletion"], "deletion", ["m"], np.ones((1, 2)), np.ones((1, 1)), [None]),
            "\\[1, 1\\]",
        ),
    ],
)
def test_bad_evaluation_records_are_refused(tmp_path, record, message):
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match=message):
        run.log_records([Scalar("fine", 1.0, 0), record])
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {}
