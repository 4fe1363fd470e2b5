"""``run.log`` takes what people log: numbers on the fast path, and figures, images, tensors, explanations and
deepscope's result objects as their record kinds (:func:`deepscope.track.convert.records`), read back through the
Reader."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image as PILImage
from torch import nn

import deepscope as ds
from deepscope.store import Reader
from deepscope.track import convert


def _tiny_cnn() -> nn.Module:
    with torch.random.fork_rng():  # the user's global seed stays as it was
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        ).eval()


def _figure() -> Figure:
    figure = Figure(figsize=(4, 3), dpi=50)  # 200 x 150 pixels
    axes = figure.add_subplot()
    axes.plot([0, 1, 2], [2, 0, 1], color="tab:red")
    axes.set_title("loss")
    return figure


def _png(figure: Figure) -> np.ndarray:
    """The figure as matplotlib's own ``savefig`` draws it, decoded."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return np.asarray(PILImage.open(buffer))


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """One of each of deepscope's result objects, from a tiny CNN on three 8 x 8 images."""
    model = _tiny_cnn()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    explained = ds.explain(model, x, method="saliency")
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.8, 0.35, 0.6, 0.9, 0.2])
    return {
        "explanation": explained,
        "confusion": ds.confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], classes=["a", "b", "c"]),
        "binary": ds.binary_report(labels, scores),
        "one_vs_rest": ds.binary_report([0, 1, 2, 1], torch.softmax(torch.randn(4, 3), 1), classes=["a", "b", "c"]),
        "sanity": ds.sanity_check(model, x, methods=["saliency"]),
        "faithfulness": ds.faithfulness(model, x, explained, steps=4),
        "comparison": ds.compare_methods(model, x, methods=["saliency"], random=False, steps=4, progress=False),
        "features": ds.embed(model, x, "2", progress=False),
        "filters": ds.filters(model, "0"),
        "top_patches": ds.top_patches(model, x, "0", units=[0, 2], k=2, progress=False),
        "maximization": ds.maximize(model, 1, steps=2, size=8, progress=False),
    }


@dataclass
class Case:
    value: Callable[[dict[str, Any]], Any]
    kinds: dict[str, str]  # tag -> kind read back, for the value logged under "x"
    check: Callable[[Reader, Any], None]  # reads back and compares with the value


def _image(reader: Reader, tag: str = "x") -> np.ndarray:
    (record,) = reader.records(tag)
    return record.pixels


def _same_records(expected: Callable[[Any], list[Any]], fields: tuple[str, ...]) -> Callable[[Reader, Any], None]:
    """A check that what was read back equals what the ``log_*`` path's converter makes of the value."""

    def check(reader: Reader, value: Any) -> None:
        for made in expected(value):
            (back,) = reader.records(made.tag)
            for name in fields:
                np.testing.assert_equal(getattr(back, name), getattr(made, name), err_msg=name)

    return check


def _check_figure(reader: Reader, figure: Figure) -> None:
    pixels = _image(reader)
    assert pixels.shape == (150, 200, 3)  # figsize x dpi, opaque: RGB
    np.testing.assert_array_equal(pixels, _png(figure)[:, :, :3])


def _check_pil(reader: Reader, image: PILImage.Image) -> None:
    expected = np.asarray(image.convert("RGBA") if image.mode == "LA" else image)  # grey, RGB, RGBA as they are
    np.testing.assert_array_equal(_image(reader), expected)


def _check_chw(reader: Reader, tensor: torch.Tensor) -> None:
    expected = np.round(tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(_image(reader), expected[:, :, 0] if expected.shape[2] == 1 else expected)


def _check_equal(reader: Reader, array: Any) -> None:
    np.testing.assert_array_equal(_image(reader), np.asarray(array))


def _check_float_hwc(reader: Reader, array: np.ndarray, tag: str = "x") -> None:
    np.testing.assert_array_equal(_image(reader, tag), np.round(array * 255).astype(np.uint8))


def _check_explanation(reader: Reader, explanation: ds.Explanation) -> None:
    (back,) = reader.records("x")
    made = convert.explanation_set(explanation)
    assert back.methods == ["saliency"] and back.targets == made.targets
    for name in ("inputs", "heatmaps", "overlays", "scores"):
        np.testing.assert_array_equal(getattr(back, name), getattr(made, name), err_msg=name)


def _check_confusion(reader: Reader, matrix: Any) -> None:
    (back,) = reader.records("x")
    np.testing.assert_array_equal(back.counts, matrix.counts.numpy())
    assert back.classes == ["a", "b", "c"]


def _check_filters(reader: Reader, filters: Any) -> None:
    np.testing.assert_array_equal(_image(reader), filters.grid())
    assert reader.scalars("x/noise").values.tolist() == [pytest.approx(float(filters.noise.mean()))]


_PR = ("thresholds", "tp", "fp", "tn", "fn", "precision", "recall")
_RNG = np.random.default_rng(3)
_CHW = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(2))


def _bytes(*shape: int) -> np.ndarray:
    return _RNG.integers(0, 256, shape, np.uint8)


CASES: dict[str, Case] = {
    "matplotlib figure": Case(lambda r: _figure(), {"x": "image"}, _check_figure),
    "PIL RGB": Case(
        lambda r: PILImage.fromarray(_RNG.integers(0, 256, (5, 7, 3), np.uint8)), {"x": "image"}, _check_pil
    ),
    "PIL L": Case(lambda r: PILImage.fromarray(_RNG.integers(0, 256, (5, 7), np.uint8)), {"x": "image"}, _check_pil),
    "PIL LA": Case(lambda r: PILImage.new("LA", (4, 3), (90, 128)), {"x": "image"}, _check_pil),
    "tensor [3, H, W] float": Case(lambda r: _CHW, {"x": "image"}, _check_chw),
    "tensor [1, H, W] float": Case(lambda r: _CHW[:1], {"x": "image"}, _check_chw),
    "tensor [4, H, W] float": Case(lambda r: torch.cat([_CHW, _CHW[:1]]), {"x": "image"}, _check_chw),
    "tensor [3, 4, 3] is channels first": Case(lambda r: _CHW[:, :4, :3], {"x": "image"}, _check_chw),
    "tensor [H, W] uint8": Case(
        lambda r: torch.arange(35, dtype=torch.uint8).reshape(5, 7), {"x": "image"}, _check_equal
    ),
    "array [H, W, 4] uint8": Case(lambda r: _RNG.integers(0, 256, (5, 7, 4), np.uint8), {"x": "image"}, _check_equal),
    "array [H, W, 3] float, [3, 4, 3] channels last": Case(
        lambda r: _RNG.random((3, 4, 3)), {"x": "image"}, _check_float_hwc
    ),
    "array [C, H, W] uint8": Case(
        lambda r: _bytes(3, 5, 7),
        {"x": "image"},
        lambda reader, a: np.testing.assert_array_equal(_image(reader), a.transpose(1, 2, 0)),
    ),
    "Explanation": Case(lambda r: r["explanation"], {"x": "explanation"}, _check_explanation),
    "ConfusionMatrix": Case(lambda r: r["confusion"], {"x": "confusion_matrix"}, _check_confusion),
    "BinaryReport": Case(
        lambda r: r["binary"], {"x": "pr_curve"}, _same_records(lambda v: convert.pr_curves(v, "x"), _PR)
    ),
    "OneVsRest": Case(
        lambda r: r["one_vs_rest"],
        {"x/a": "pr_curve", "x/b": "pr_curve", "x/c": "pr_curve"},
        _same_records(lambda v: convert.pr_curves(v, "x"), _PR),
    ),
    "SanityCheck": Case(
        lambda r: r["sanity"],
        {"x": "sanity_check"},
        _same_records(lambda v: [convert.sanity_curves(v, "x")], ("mode", "methods", "stages", "mean", "std")),
    ),
    "Faithfulness": Case(
        lambda r: r["faithfulness"],
        {"x": "faithfulness"},
        _same_records(lambda v: [convert.faithfulness_curves(v, "x")], ("metric", "methods", "mean", "std", "auc")),
    ),
    "MethodComparison": Case(
        lambda r: r["comparison"],
        {"x": "method_comparison"},
        _same_records(lambda v: [convert.comparison_table(v, "x")], ("methods", "metrics", "mean", "std", "errors")),
    ),
    "Features": Case(
        lambda r: r["features"],
        {"x": "embedding"},
        lambda reader, f: np.testing.assert_array_equal(reader.records("x")[0].features, f.features.numpy()),
    ),
    "Filters": Case(lambda r: r["filters"], {"x": "image", "x/noise": "scalar"}, _check_filters),
    "TopPatches": Case(
        lambda r: r["top_patches"],
        {"x/0": "image", "x/2": "image"},
        lambda reader, t: [np.testing.assert_array_equal(_image(reader, f"x/{u}"), t.grid(u)) for u in (0, 2)],
    ),
    "Maximization": Case(
        lambda r: r["maximization"],
        {"x/logit[1]": "image"},
        lambda reader, m: _check_float_hwc(reader, m.to_records("x")[0].pixels, "x/logit[1]"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_what_run_log_takes_is_read_back_as_its_kind_with_its_content(tmp_path, results, case):
    spec = CASES[case]
    value = spec.value(results)
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 0.5, "x": value}, step=3)
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"loss": "scalar", **spec.kinds}
        for tag in spec.kinds:
            steps = reader.scalars(tag).steps if spec.kinds[tag] == "scalar" else [r.step for r in reader.records(tag)]
            assert list(steps) == [3], tag
        spec.check(reader, value)


def test_a_figure_is_drawn_without_taking_its_canvas_or_pyplot(tmp_path):
    figure = _figure()
    canvas = figure.canvas
    with ds.Run(tmp_path / "r") as run:
        run.log({"figure": figure})
    assert figure.canvas is canvas  # a notebook's or a window's canvas stays the figure's
    transparent = Figure(figsize=(1, 1), dpi=20)
    transparent.patch.set_alpha(0)
    with ds.Run(tmp_path / "t") as run:
        run.log({"figure": transparent})
    with Reader(tmp_path / "t") as reader:
        pixels = _image(reader, "figure")
    assert pixels.shape == (20, 20, 4) and (pixels[:, :, 3] == 0).all()  # the alpha is kept where it says something


def test_numbers_in_a_mixed_call_stay_on_the_fast_path(tmp_path, monkeypatch):
    converted: list[str] = []
    records = convert.records

    def spy(tag: str, value: object, step: int = 0) -> list:
        converted.append(tag)
        return records(tag, value, step)

    monkeypatch.setattr(convert, "records", spy)
    with ds.Run(tmp_path / "r") as run:
        numbers = {"float": 0.5, "int": 2, "numpy": np.float32(1.5), "tensor": torch.tensor(2.5), "one": np.ones(1)}
        run.log({**numbers, "figure": _figure(), "image": torch.rand(3, 4, 4)}, step=2, epoch=1)
        run.log(numbers, step=3)
    assert converted == ["figure", "image"]  # the numbers never reach the conversion
    with Reader(tmp_path / "r") as reader:
        for tag, value in numbers.items():
            series = reader.scalars(tag)
            assert series.steps.tolist() == [2, 3] and series.epochs.tolist() == [1, -1]
            assert series.values.tolist() == [float(np.asarray(value).reshape(()))] * 2
        (image,) = reader.records("figure")
        assert image.wall_time == series.wall_times[0]  # one call, one wall time


def test_without_a_step_each_tag_counts_on_and_epochs_reach_scalar_records(tmp_path, results):
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
        run.log({"loss": 0.9, "cm": results["confusion"], "filters": results["filters"]}, epoch=4)
        run.log({"cm": results["confusion"], "pr": results["one_vs_rest"]})
    with Reader(tmp_path / "r") as reader:
        assert reader.scalars("loss").steps.tolist() == [0, 1]
        assert [r.step for r in reader.records("cm")] == [0, 1]
        assert [r.step for r in reader.records("pr/b")] == [0]
        assert reader.scalars("filters/noise").epochs.tolist() == [4]


BAD = {
    "an unknown type": ({"x": {"a": 1}}, "cannot log a dict .*matplotlib Figures.*PIL images.*ConfusionMatrix"),
    "a string": ({"x": "0.3"}, "cannot log a str .*run.log takes numbers"),
    "a vector": (
        {"x": torch.ones(3)},
        r"Tensor of more than one element as an image.* has shape \[3\]\. Reduce it",
    ),
    "a batch of images": ({"x": np.zeros((2, 3, 4, 4))}, r"ndarray .* has shape \[2, 3, 4, 4\]"),
    "five channels": ({"x": torch.zeros(5, 6, 6)}, r"C = 1, 3 or 4 channels; this one has shape \[5, 6, 6\]"),
    "floats beyond [0, 1]": ({"x": torch.full((3, 4, 4), 2.0)}, r"float pixels must lie in \[0, 1\]"),
    "int64 pixels": ({"x": np.zeros((4, 4), np.int64)}, "pixels must be uint8 or float"),
    "an image under a scalar tag": ({"loss": torch.rand(3, 4, 4)}, "holds scalar values; it cannot take a image"),
    "a figure under a tag that is not a str": ({3: Figure()}, "a tag is a non-empty str"),
    "an explanation of signals": (
        {"x": ds.Explanation("m", torch.zeros(2, 5), None, None, torch.zeros(2), torch.zeros(2, 5))},
        "shows images",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_what_cannot_be_stored_is_a_clear_error_and_nothing_of_the_call_is_stored(tmp_path, case):
    values, message = BAD[case]
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
        with pytest.raises(ds.BadInputError, match=message):
            run.log({"other": 2.0, "fine": _figure(), **values})
        run.log({"loss": 0.5})
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"loss": "scalar"}
        assert reader.scalars("loss").steps.tolist() == [0, 1]


def test_a_derived_tag_cannot_take_two_kinds_in_one_call(tmp_path, results):
    with ds.Run(tmp_path / "r") as run, pytest.raises(ds.BadInputError, match="'p/0' is given both scalar and image"):
        run.log({"p": results["top_patches"], "p/0": 1.0})  # top_patches logs p/0 and p/2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_and_scalars_in_one_call(tmp_path):
    image = torch.rand(3, 5, 7, device="cuda")
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": torch.tensor(0.5, device="cuda"), "image": image}, step=1)
    with Reader(tmp_path / "r") as reader:
        assert reader.scalars("loss").values.tolist() == [0.5]
        expected = np.round(image.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(_image(reader, "image"), expected)
