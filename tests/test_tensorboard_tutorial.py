"""The official PyTorch TensorBoard tutorial, with only the import changed, runs against deepscope's SummaryWriter.

The calls follow pytorch.org/tutorials/intermediate/tensorboard_tutorial.html in order, on random data shaped like
FashionMNIST (no download); the run is then read back and checked against what TensorBoard would show. The
other SummaryWriter additions (audio, video, boxes, custom scalars, the unsupported methods) are tested below.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

torchvision = pytest.importorskip("torchvision")

import deepscope as ds  # noqa: E402
from deepscope import SummaryWriter  # was: from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from deepscope.errors import BadInputError, NotSupportedError  # noqa: E402
from deepscope.store import Reader  # noqa: E402
from deepscope.track.records import Audio, ScalarLayout, Video  # noqa: E402
from deepscope.track.tensorboard import figure_pixels  # noqa: E402

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt", "Sandal", "Sneaker", "Bag", "Ankle Boot")


class Net(nn.Module):
    """The tutorial's network."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(nn.functional.relu(self.conv1(x)))
        x = self.pool(nn.functional.relu(self.conv2(x)))
        x = x.view(-1, 16 * 4 * 4)
        x = nn.functional.relu(self.fc1(x))
        x = nn.functional.relu(self.fc2(x))
        return self.fc3(x)


def plot_classes_preds(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Figure:
    """The tutorial's figure of predictions against actuals (a Figure without pyplot, as a library should)."""
    with torch.no_grad():
        probs = nn.functional.softmax(net(images), dim=1)
    preds = probs.argmax(1)
    fig = Figure(figsize=(12, 48 / 10))
    for idx in range(4):
        ax = fig.add_subplot(1, 4, idx + 1, xticks=[], yticks=[])
        ax.imshow((images[idx, 0] / 2 + 0.5).numpy(), cmap="Greys")
        ax.set_title(
            f"{CLASSES[int(preds[idx])]}, {probs[idx, preds[idx]] * 100.0:.1f}%\n(label: {CLASSES[int(labels[idx])]})",
            color="green" if preds[idx] == labels[idx] else "red",
        )
    return fig


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The tutorial's calls, in order; returns what was logged, for the checks."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=generator)  # trainset.data
    targets = torch.randint(0, 10, (64,), generator=generator)  # trainset.targets
    normalised = (raw.float() / 255 - 0.5) / 0.5  # transforms.Normalize((0.5,), (0.5,)): values in [-1, 1]
    log_dir = tmp_path_factory.mktemp("runs") / "fashion_mnist_experiment_1"
    logged: dict[str, object] = {"log_dir": log_dir}

    writer = SummaryWriter(str(log_dir))
    images = normalised[:4, None]  # dataiter: a batch of 4
    img_grid = torchvision.utils.make_grid(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.add_image("four_fashion_mnist_images", img_grid)
        writer.add_image("four_fashion_mnist_images", img_grid * 1.5, 1)  # still clipped, warned once
    logged["grid"], logged["clip_warnings"] = img_grid, [str(w.message) for w in caught]

    net = Net()
    writer.add_graph(net, images)

    perm = torch.randperm(len(raw), generator=generator)[:20]  # select_n_random(trainset.data, trainset.targets)
    chosen, chosen_labels = raw[perm], targets[perm]
    class_labels = [CLASSES[lab] for lab in chosen_labels]
    features = chosen.view(-1, 28 * 28)
    writer.add_embedding(features, metadata=class_labels, label_img=chosen.unsqueeze(1))
    logged["features"], logged["class_labels"], logged["label_img"] = features, class_labels, chosen

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    running_loss, losses, every = 0.0, [], 2
    for i in range(8):  # the training loop, on batches of 4
        inputs, batch_labels = normalised[4 * i : 4 * i + 4, None], targets[4 * i : 4 * i + 4]
        optimizer.zero_grad()
        loss = criterion(net(inputs), batch_labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % every == every - 1:
            writer.add_scalar("training loss", running_loss / every, i)
            writer.add_figure("predictions vs. actuals", plot_classes_preds(net, inputs, batch_labels), global_step=i)
            losses.append((i, running_loss / every))
            running_loss = 0.0
    logged["losses"], logged["last_figure"] = losses, plot_classes_preds(net, inputs, batch_labels)

    with torch.no_grad():
        test_probs = nn.functional.softmax(net(normalised[32:, None]), dim=1)
    test_label = targets[32:]
    for class_index in range(len(CLASSES)):
        tensorboard_truth = test_label == class_index
        tensorboard_probs = test_probs[:, class_index]
        writer.add_pr_curve(CLASSES[class_index], tensorboard_truth, tensorboard_probs, global_step=0)
    logged["test_probs"], logged["test_label"] = test_probs, test_label
    writer.close()
    return logged


def test_normalised_grid_is_clipped_as_tensorboard(tutorial: dict[str, object]) -> None:
    grid = tutorial["grid"]
    assert isinstance(grid, torch.Tensor) and grid.min() < 0  # the normalised grid really leaves [0, 1]
    with Reader(tutorial["log_dir"]) as reader:  # type: ignore[arg-type]
        first, second = reader.records("four_fashion_mnist_images")
    expected = np.round(grid.clamp(0, 1).numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(first.pixels, expected)
    assert (second.pixels >= first.pixels).all() and second.step == 1
    warned = tutorial["clip_warnings"]
    assert isinstance(warned, list) and len(warned) == 1 and "clipped" in warned[0]


def test_graph_embedding_scalars(tutorial: dict[str, object]) -> None:
    with Reader(tutorial["log_dir"]) as reader:  # type: ignore[arg-type]
        (graph,) = reader.records("model")
        assert {m["name"] for m in graph.modules} >= {"conv1", "conv2", "fc1", "fc2", "fc3"}
        (embedding,) = reader.records("default")
        features = tutorial["features"]
        assert isinstance(features, torch.Tensor)
        np.testing.assert_array_equal(embedding.features, features.numpy().astype(np.float32))
        assert embedding.labels == tutorial["class_labels"]
        np.testing.assert_array_equal(embedding.thumbnails, tutorial["label_img"].numpy())  # type: ignore[union-attr]
        series = reader.scalars("training loss")
        losses = tutorial["losses"]
        assert isinstance(losses, list)
        assert series.steps.tolist() == [step for step, _ in losses]
        assert series.values.tolist() == [value for _, value in losses]


def test_figures_stored_as_png_images(tutorial: dict[str, object]) -> None:
    with Reader(tutorial["log_dir"]) as reader:  # type: ignore[arg-type]
        assert reader.tags()["predictions vs. actuals"] == "image"
        files = reader.files("predictions vs. actuals")
        records = reader.records("predictions vs. actuals")
    assert [step for step, _, _ in files] == [1, 3, 5, 7] and all(path.endswith(".png") for _, path, _ in files)
    last = records[-1].pixels
    assert last.shape == (480, 1200, 3)  # figsize (12, 4.8) at 100 dpi, RGB
    figure = tutorial["last_figure"]
    assert isinstance(figure, Figure)
    np.testing.assert_array_equal(last, figure_pixels(figure))  # the same drawing as the figure's own Agg render
    assert len({tuple(p) for p in last.reshape(-1, 3)[::97]}) > 3  # titles and images, not a blank canvas


def test_pr_curves_per_class(tutorial: dict[str, object]) -> None:
    probs, truth = tutorial["test_probs"], tutorial["test_label"]
    assert isinstance(probs, torch.Tensor) and isinstance(truth, torch.Tensor)
    with Reader(tutorial["log_dir"]) as reader:  # type: ignore[arg-type]
        for index, name in enumerate(CLASSES):
            (curve,) = reader.records(name)
            positives = int((truth == index).sum())
            assert curve.tp[0] == positives and curve.tp[0] + curve.fp[0] == len(truth)  # threshold 0: all positive
            above = probs[:, index].numpy() >= curve.thresholds[64] + 1e-9
            assert curve.tp[64] + curve.fp[64] == pytest.approx(above.sum(), abs=1)  # bucketing at a threshold


def test_add_figure_leaves_pyplot_alone(tmp_path: Path) -> None:
    """Without pyplot imported, add_figure(close=True) does not import it; with pyplot, it closes the figure."""
    script = f"""
import sys, matplotlib
from matplotlib.figure import Figure
from deepscope import SummaryWriter
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # get_backend() would import pyplot
fig = Figure(figsize=(2, 1))
fig.add_subplot().plot([0, 1], [1, 0])
with SummaryWriter({str(tmp_path / "a")!r}) as writer:
    writer.add_figure("f", [fig, fig], close=True)
assert "matplotlib.pyplot" not in sys.modules and dict.__getitem__(matplotlib.rcParams, "backend") == backend
matplotlib.use("Agg")
import matplotlib.pyplot as plt
shown = plt.figure(figsize=(2, 1))
canvas = shown.canvas
with SummaryWriter({str(tmp_path / "b")!r}) as writer:
    writer.add_figure("f", shown, close=False)
    assert plt.fignum_exists(shown.number) and shown.canvas is canvas
    writer.add_figure("f", shown, global_step=1)
assert not plt.fignum_exists(shown.number)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with Reader(tmp_path / "a") as reader:
        (pair,) = reader.records("f")
    assert pair.pixels.shape == (100, 400, 3)  # two 200x100 figures side by side


# ---- the rest of TensorBoard's SummaryWriter ---------------------------------------------------------------------


def test_audio_stored_as_wav(tmp_path: Path) -> None:
    rate = 8000
    tone = 1.5 * torch.sin(torch.arange(rate) * (2 * torch.pi * 440 / rate))  # peaks beyond [-1, 1]
    with SummaryWriter(tmp_path / "run") as writer:
        with pytest.warns(UserWarning, match="clipped"):
            writer.add_audio("tone", tone[None], 3, sample_rate=rate)
        writer.add_audio("stereo", torch.stack([tone / 2, -tone / 2]), sample_rate=rate)
    with Reader(tmp_path / "run") as reader:
        (sound,) = reader.records("tone")
        (stereo,) = reader.records("stereo")
        ((_, path, meta),) = reader.files("tone")
    assert path.endswith(".wav") and meta == {"sample_rate": rate, "channels": 1, "frames": rate}
    assert (tmp_path / "run" / path).read_bytes()[:4] == b"RIFF"
    assert sound.step == 3 and sound.sample_rate == rate and sound.samples.shape == (rate, 1)
    expected = np.round(tone.clamp(-1, 1).numpy() * 32767) / 32767
    np.testing.assert_allclose(sound.samples[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(stereo.samples, np.stack([tone / 2, -tone / 2], 1).clip(-1, 1), atol=1 / 32767)


def test_video_stored_as_gif(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([0, 64, 128, 255], dtype=torch.uint8)  # few colours: GIF keeps them exactly
    clips = levels[torch.randint(0, 4, (2, 5, 3, 6, 7), generator=generator)]
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_video("clip", clips, 2, fps=10)
    with Reader(tmp_path / "run") as reader:
        (video,) = reader.records("clip")
        ((_, path, _),) = reader.files("clip")
    assert path.endswith(".gif") and (tmp_path / "run" / path).read_bytes()[:6] == b"GIF89a"
    assert video.step == 2 and video.fps == 10 and video.frames.shape == (5, 6, 14, 3)  # two clips side by side
    expected = torch.cat([clips[0], clips[1]], dim=3).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(video.frames, expected)


def test_image_with_boxes(tmp_path: Path) -> None:
    image = torch.full((3, 20, 30), 0.5)
    boxes = torch.tensor([[2.0, 3.0, 12.0, 15.0], [15, 2, 28, 18]])
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_image_with_boxes("boxes", image, boxes, 1, labels=["a", ""])  # the second box without a label
        writer.add_image_with_boxes("scaled", image, boxes[:1], rescale=2)
        with pytest.raises(BadInputError, match="one label per box"):
            writer.add_image_with_boxes("boxes", image, boxes, labels=["a"])
        with pytest.raises(BadInputError, match=r"\[N, 4\]"):
            writer.add_image_with_boxes("boxes", image, torch.zeros(2, 3))
    with Reader(tmp_path / "run") as reader:
        (drawn,) = reader.records("boxes")
        (scaled,) = reader.records("scaled")
    red, grey = (255, 0, 0), (128, 128, 128)
    assert drawn.pixels.shape == (20, 30, 3) and scaled.pixels.shape == (40, 60, 3)
    assert tuple(drawn.pixels[10, 15]) == red and tuple(drawn.pixels[18, 20]) == red  # left and bottom edges
    assert tuple(drawn.pixels[10, 20]) == grey and tuple(drawn.pixels[0, 0]) == grey  # inside, outside
    band = drawn.pixels[4:15, 4:12]  # the first box's label: light text on a red band
    assert (band == red).all(axis=-1).any() and (band[..., 1] > 150).any()
    assert tuple(scaled.pixels[29, 4]) == red and tuple(scaled.pixels[29, 60 // 2]) == grey  # boxes scale too


def test_custom_scalars_layout(tmp_path: Path) -> None:
    layout = {"Losses": {"loss": ["Multiline", ["loss/.*"]], "band": ["Margin", ["acc", "acc/low", "acc/high"]]}}
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_custom_scalars(layout)
        writer.add_custom_scalars_multilinechart(["lr"], category="Optimiser", title="learning rate")
        with pytest.raises(BadInputError, match="3 tags"):
            writer.add_custom_scalars({"c": {"t": ["Margin", ["a", "b"]]}})
        with pytest.raises(BadInputError, match="not a regular expression"):
            writer.add_custom_scalars({"c": {"t": ["Multiline", ["(unclosed"]]}})
    with Reader(tmp_path / "run") as reader:
        stored = reader.records("custom_scalars")
    assert [r.layout for r in stored] == [layout, layout | {"Optimiser": {"learning rate": ["Multiline", ["lr"]]}}]


def test_unsupported_methods_say_what_to_use(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path / "run") as writer:
        for name, advice in (("add_mesh", "add_image"), ("add_onnx_graph", "add_graph"), ("add_tensor", "add_scalar")):
            assert not hasattr(writer, name)
            with pytest.raises(NotSupportedError, match=f"{name} is not supported.*{advice}"):
                getattr(writer, name)("tag", torch.zeros(3))
        with pytest.raises(AttributeError, match="no attribute 'add_nothing'"):
            writer.add_nothing


def test_pr_curve_raw_equals_pr_curve(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(60, generator=generator)
    labels = (torch.rand(60, generator=generator) < scores).int()
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_pr_curve("computed", labels, scores, 2, num_thresholds=9)
        writer.flush()
        with Reader(tmp_path / "run") as reader:
            (c,) = reader.records("computed")
        writer.add_pr_curve_raw("raw", c.tp, c.fp, c.tn, c.fn, c.precision, c.recall, 2, num_thresholds=9)
        with pytest.raises(BadInputError, match="needs 9 values"):
            writer.add_pr_curve_raw("raw", c.tp[:3], c.fp, c.tn, c.fn, c.precision, c.recall, num_thresholds=9)
    with Reader(tmp_path / "run") as reader:
        (raw,) = reader.records("raw")
    for name in ("thresholds", "tp", "fp", "tn", "fn", "precision", "recall"):
        np.testing.assert_array_equal(getattr(raw, name), getattr(c, name), err_msg=name)
    assert raw.step == c.step == 2


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Audio("a", 0, np.zeros((2, 3, 4))), r"\[T\] or \[T, channels\]"),
        (Audio("a", 0, np.full(5, 1.5)), r"in \[-1, 1\]"),
        (Audio("a", 0, np.zeros(5), sample_rate=0), "sample_rate"),
        (Audio("a", 0, np.zeros(5), sample_rate=441.5), "sample_rate"),
        (Video("v", 0, np.zeros((2, 3), np.uint8)), r"\[T, H, W\]"),
        (Video("v", 0, np.zeros((2, 3, 3, 3), np.uint8), fps=0), "fps"),
        (Video("v", 0, np.full((2, 3, 3), 2.0)), r"in \[0, 1\]"),
        (ScalarLayout({}), "non-empty dict"),
        (ScalarLayout({"c": {"t": ["Bars", ["x"]]}}), "'Bars'"),
        (ScalarLayout({"c": {"t": ["Multiline", "loss"]}}), "list of tag names"),
    ],
)
def test_records_checked_when_logged(tmp_path: Path, record: object, message: str) -> None:
    """What Run.log_records refuses of the new kinds (the SummaryWriter clips before; a record made by hand is
    taken as it is or refused)."""
    with ds.Run(tmp_path / "run") as run, pytest.raises(BadInputError, match=message):
        run.log_records([record])  # type: ignore[list-item]


def test_clip_warning_points_at_the_callers_line(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path / "run") as writer, pytest.warns(UserWarning, match="clipped") as caught:
        writer.add_image("img", torch.full((3, 2, 2), -1.0))
        writer.add_audio("snd", torch.full((10,), 2.0), sample_rate=100.0)  # a whole float rate is taken
        writer.add_image("img", torch.full((3, 2, 2), 2.0))  # the same tag: no second warning
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name] * 2
    with Reader(tmp_path / "run") as reader:
        assert [r.pixels.max() for r in reader.records("img")] == [0, 255]
        assert reader.records("snd")[0].sample_rate == 100
