"""The SummaryWriter drop-in and the TensorBoard log import, checked against TensorBoard's own files.

One short training-like script runs against ``torch.utils.tensorboard.SummaryWriter`` and against ours; what our
store holds must equal what TensorBoard's ``EventAccumulator`` reads from the event files.
"""

from __future__ import annotations

import io
import sys
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")
from PIL import Image as PILImage
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter as TBWriter

import deepscope as ds
from deepscope.cli import main
from deepscope.errors import BadInputError, StoreError
from deepscope.store import Reader
from deepscope.track.importer import import_tensorboard, uniform_counts
from deepscope.track.tensorboard import SummaryWriter

STEPS = 4
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")  # TensorBoard's add_graph


def script(writer_class: type, log_dir: Path) -> dict[str, object]:
    """A tiny training loop logging every supported kind; returns what it logged, for the import tests."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    logged: dict[str, object] = {"loss": [], "weights": []}
    writer = writer_class(str(log_dir))
    writer.add_graph(model, x)
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        writer.add_scalar("train/loss", loss.item(), step)
        writer.add_scalars("acc", {"train": 0.5 + step / 10, "val": 0.4 + step / 20}, step)
        writer.add_histogram("fc1.weight", model[0].weight, step)
        writer.add_histogram("numpy", np.linspace(-1, 3, 101) * (step + 1), global_step=step, bins=16)
        logged["loss"].append(loss.item())  # type: ignore[union-attr]
        logged["weights"].append(model[0].weight.detach().clone())  # type: ignore[union-attr]
    generator = torch.Generator().manual_seed(1)
    writer.add_image("image/chw_float", torch.rand(3, 6, 5, generator=generator), 0)
    writer.add_image("image/hwc_uint8", torch.randint(0, 256, (6, 5, 3), generator=generator).byte(), 1, None, "HWC")
    writer.add_image("image/grey_hw", torch.randint(0, 256, (4, 7), generator=generator).byte(), 0, dataformats="HW")
    writer.add_images("images/batch", torch.rand(10, 1, 3, 4, generator=generator), 2)
    normalised = torch.rand(3, 6, 5, generator=generator) * 2 - 1  # a normalised image: TensorBoard clips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ours warns once; the tutorial's test checks the warning
        writer.add_image("image/normalised", normalised, 0)
        writer.add_audio("sound", 1.2 * torch.sin(torch.arange(800) * 0.05)[None], 2, sample_rate=8000)
    writer.add_text("notes", "lr schedule changed by hand", 3)
    scores = torch.rand(50, generator=generator)
    labels = (torch.rand(50, generator=generator) < scores).int()
    writer.add_pr_curve("pr", labels, scores, 1, num_thresholds=11)
    features = torch.randn(6, 3, generator=generator)
    writer.add_embedding(features, metadata=list("abcdef"), label_img=torch.rand(6, 1, 4, 4), global_step=2)
    writer.add_hparams({"lr": 0.1, "act": "relu"}, {"hp/best": 0.75})
    writer.close()
    logged["features"] = features
    return logged


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    base = tmp_path_factory.mktemp("writers")
    logged = script(TBWriter, base / "tb")
    script(SummaryWriter, base / "ds")
    return base / "tb", base / "ds", logged


def accumulator(path: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(path), size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def tb_pixels(event: object) -> np.ndarray:
    with PILImage.open(io.BytesIO(event.encoded_image_string)) as image:  # type: ignore[attr-defined]
        return np.asarray(image)


def test_scalars_equal_tensorboards(both: tuple[Path, Path, dict[str, object]]) -> None:
    tb, ours, _ = both
    with Reader(ours) as reader:
        for tag, directory, tb_tag in (
            ("train/loss", tb, "train/loss"),
            ("acc/train", tb / "acc_train", "acc"),  # TensorBoard: one run per key; ours: one tag per key
            ("acc/val", tb / "acc_val", "acc"),
        ):
            expected = accumulator(directory).Scalars(tb_tag)
            series = reader.scalars(tag)
            assert series.steps.tolist() == [e.step for e in expected]
            np.testing.assert_array_equal(series.values.astype(np.float32), [e.value for e in expected])


def test_histograms_match_tensorboards_statistics(both: tuple[Path, Path, dict[str, object]]) -> None:
    tb, ours, _ = both
    acc = accumulator(tb)
    with Reader(ours) as reader:
        for tag, bins in (("fc1.weight", 64), ("numpy", 16)):
            records = reader.records(tag)
            expected = acc.Histograms(tag)
            assert [r.step for r in records] == [e.step for e in expected]
            for record, event in zip(records, expected, strict=True):
                h = event.histogram_value
                assert len(record.counts) == bins
                assert record.count == h.num == record.counts.sum()
                assert record.low == pytest.approx(h.min, abs=1e-6) and record.high == pytest.approx(h.max, abs=1e-6)
                assert record.mean * record.count == pytest.approx(h.sum, rel=1e-5, abs=1e-5)
                assert record.norm**2 == pytest.approx(h.sum_squares, rel=1e-5)


def test_images_equal_tensorboards(both: tuple[Path, Path, dict[str, object]]) -> None:
    tb, ours, _ = both
    acc = accumulator(tb)
    with Reader(ours) as reader:
        for tag in ("image/chw_float", "image/hwc_uint8", "image/grey_hw", "images/batch", "image/normalised"):
            (event,) = acc.Images(tag)
            (record,) = reader.records(tag)
            expected = tb_pixels(event)
            pixels = record.pixels if record.pixels.ndim == 3 else np.repeat(record.pixels[:, :, None], 3, axis=2)
            assert record.step == event.step
            assert pixels.shape == expected.shape
            # TensorBoard truncates float * 255; we round: at most one level apart, uint8 exactly equal
            tolerance = 0 if "uint8" in tag else 1
            assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= tolerance


def test_audio_equals_tensorboards(both: tuple[Path, Path, dict[str, object]]) -> None:
    tb, ours, _ = both
    (event,) = accumulator(tb).Audio("sound")
    with wave.open(io.BytesIO(event.encoded_audio_string)) as sound:
        expected = np.frombuffer(sound.readframes(sound.getnframes()), "<i2").astype(np.float64) / 32767
        rate = sound.getframerate()
    with Reader(ours) as reader:
        (record,) = reader.records("sound")
    assert record.step == event.step == 2 and record.sample_rate == rate == 8000
    # both clip to [-1, 1]; TensorBoard truncates to 16 bits, we round: at most one level apart
    np.testing.assert_allclose(record.samples[:, 0], expected, atol=1.01 / 32767)
    assert np.abs(expected).max() == 1.0


def test_text_pr_curve_embedding_hparams_graph(both: tuple[Path, Path, dict[str, object]]) -> None:
    tb, ours, logged = both
    acc = accumulator(tb)
    with Reader(ours) as reader:
        (note,) = reader.records("notes")
        (text_event,) = acc.Tensors("notes/text_summary")  # torch's writer adds the suffix
        assert note.text == tensor_util.make_ndarray(text_event.tensor_proto).item().decode() and note.step == 3

        (curve,) = reader.records("pr")
        (pr_event,) = acc.Tensors("pr")
        expected = tensor_util.make_ndarray(pr_event.tensor_proto)  # rows tp, fp, tn, fn, precision, recall
        assert curve.step == pr_event.step == 1 and len(curve.thresholds) == 11
        for row, name in enumerate(("tp", "fp", "tn", "fn", "precision", "recall")):
            np.testing.assert_allclose(getattr(curve, name), expected[row], rtol=1e-6, err_msg=name)

        (embedding,) = reader.records("default")
        projector = tb / "00002" / "default"
        np.testing.assert_array_equal(embedding.features, np.loadtxt(projector / "tensors.tsv", dtype=np.float32))
        np.testing.assert_array_equal(embedding.features, logged["features"].numpy())  # type: ignore[union-attr]
        assert embedding.labels == (projector / "metadata.tsv").read_text().split()
        assert embedding.thumbnails is not None and embedding.thumbnails.shape == (6, 4, 4)

        assert reader.config() == {"lr": 0.1, "act": "relu"}
        assert reader.scalars("hp/best").values.tolist() == [0.75]
        (graph,) = reader.records("model")
        assert [m["name"] for m in graph.modules] == ["", "0", "1", "2"]


def test_drop_in_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="purge_step"):
        SummaryWriter(tmp_path / "a", purge_step=3)
    with ds.SummaryWriter(tmp_path / "b") as writer:
        with pytest.raises(AttributeError, match="add_mesh is not supported"):
            writer.add_mesh("mesh", torch.zeros(1, 3, 3))
        with pytest.raises(BadInputError, match="input_to_model"):
            writer.add_graph(nn.Linear(2, 2))
        with pytest.raises(BadInputError, match="names 3 axes"):
            writer.add_image("img", torch.rand(3, 4), dataformats="CHW")
        with pytest.warns(UserWarning, match="clipped"):  # as TensorBoard clips
            writer.add_image("img", torch.rand(3, 4, 4) * 2)
        with pytest.raises(BadInputError, match="global_step"):
            writer.add_scalar("loss", 1.0, global_step=-1)
        with pytest.raises(BadInputError, match="predictions"):
            writer.add_pr_curve("pr", torch.tensor([0, 1]), torch.tensor([0.5, 1.5]))
        writer.add_scalar("loss", 1.0, walltime=123.0)
    with Reader(tmp_path / "b") as reader:
        assert reader.scalars("loss").wall_times.tolist() == [123.0]
    with SummaryWriter(tmp_path / "b") as writer:  # an existing run is added to, as TensorBoard appends
        writer.add_scalar("loss", 2.0, 1)
    with Reader(tmp_path / "b") as reader:
        assert reader.scalars("loss").values.tolist() == [1.0, 2.0]


# ---- import ---------------------------------------------------------------------------------------------------


def test_import_equals_event_files(both: tuple[Path, Path, dict[str, object]], tmp_path: Path) -> None:
    tb, _, logged = both
    with pytest.warns(UserWarning, match="not imported"):  # the graph and hparams plugin data are left out
        runs = import_tensorboard(tb, tmp_path / "imported")
    hparams_run = next(p.name for p in tb.iterdir() if p.name[0].isdigit() and "." in p.name)  # add_hparams' own
    assert sorted(p.name for p in runs) == sorted(["acc_train", "acc_val", "tb", hparams_run])
    main_run = tmp_path / "imported" / "tb"
    acc = accumulator(tb)
    with Reader(main_run) as reader:
        loss = reader.scalars("train/loss")
        assert loss.steps.tolist() == list(range(STEPS))
        np.testing.assert_array_equal(loss.values, np.float32(logged["loss"]))
        np.testing.assert_array_equal(loss.wall_times, [e.wall_time for e in acc.Scalars("train/loss")])
        for record, weight in zip(reader.records("fc1.weight"), logged["weights"], strict=True):  # type: ignore[call-overload]
            assert record.count == weight.numel() and record.counts.sum() == pytest.approx(weight.numel())
            assert record.low == pytest.approx(weight.min().item()) and record.high == pytest.approx(
                weight.max().item()
            )
            assert record.mean == pytest.approx(weight.mean().item(), abs=1e-6)
            assert record.std == pytest.approx(weight.std(unbiased=False).item(), rel=1e-4)
            # re-binned counts: the distribution function stays within one TensorBoard bucket of the truth
            exact = ds.track.histogram.histogram(weight, bins=len(record.counts)).counts
            gap = np.abs(np.cumsum(record.counts) - np.cumsum(exact)).max() / weight.numel()
            assert gap < 0.1
        for tag in ("image/chw_float", "images/batch"):
            (record,) = reader.records(tag)
            np.testing.assert_array_equal(record.pixels, tb_pixels(acc.Images(tag)[0]))
        assert reader.records("notes")[0].text == "lr schedule changed by hand"
        assert (
            reader.records("pr")[0].tp.tolist()
            == tensor_util.make_ndarray(acc.Tensors("pr")[0].tensor_proto)[0].tolist()
        )
    with Reader(tmp_path / "imported" / "acc_val") as reader:
        np.testing.assert_allclose(reader.scalars("acc").values, [0.4 + s / 20 for s in range(STEPS)], rtol=1e-6)


@pytest.mark.parametrize(
    ("lower", "upper", "counts", "low", "high", "bins", "expected"),
    [
        ([0, 1, 2], [1, 2, 3], [3, 1, 2], 0.0, 3.0, 3, [3, 1, 2]),  # buckets on the bins: unchanged
        ([0], [2], [4], 0.0, 2.0, 4, [1, 1, 1, 1]),  # one bucket over four bins: shared evenly
        ([-np.inf, 1], [1, 10], [2, 6], 0.0, 4.0, 2, [2 + 2, 4]),  # clipped to [low, high] first
        ([1], [1], [5], 1.0, 1.0, 3, [5, 0, 0]),  # a constant tensor: the first bin
    ],
)
def test_uniform_counts(
    lower: list[float],
    upper: list[float],
    counts: list[float],
    low: float,
    high: float,
    bins: int,
    expected: list[float],
) -> None:
    np.testing.assert_allclose(uniform_counts(np.array(lower), np.array(upper), counts, low, high, bins), expected)


def test_import_refuses_empty_and_existing(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no TensorBoard event files"):
        import_tensorboard(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(BadInputError, match="not a directory"):
        import_tensorboard(tmp_path / "missing", tmp_path / "out")
    logs = tmp_path / "logs"
    with TBWriter(str(logs / "exp")) as writer:
        writer.add_scalar("loss", 1.0, 0)
    (path,) = import_tensorboard(logs, tmp_path / "out")
    before = Reader(path).scalars("loss").values.tolist()
    db = (path / "run.db").read_bytes()
    with pytest.raises(StoreError, match=r"already exist.*Nothing was written"):
        import_tensorboard(logs, tmp_path / "out")
    assert (path / "run.db").read_bytes() == db and Reader(path).scalars("loss").values.tolist() == before == [1.0]


def test_cli_and_missing_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    with TBWriter(str(logs)) as writer:
        writer.add_scalar("loss", 0.5, 2)
    assert main(["import-tensorboard", str(logs), "--into", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "runs" / "logs")
    assert main(["import-tensorboard", str(tmp_path / "nothing"), "--into", str(tmp_path / "runs")]) == 1
    assert "not a directory" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        import_tensorboard(logs, tmp_path / "other")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"features": np.zeros((3,))}, r"\[N, D\]"),
        ({"labels": ["a", "b"]}, "2 labels for 3"),
        ({"labels": [["a", "x"], ["b", "y"], ["c", "z"]]}, "label_header"),
        ({"thumbnails": np.zeros((2, 4, 4))}, "N = 3"),
    ],
)
def test_embedding_records_checked(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    given: dict[str, object] = {"features": np.zeros((3, 2))} | fields
    with ds.Run(tmp_path / "run") as run:
        with pytest.raises(BadInputError, match=message):
            run.log_records([ds.track.Embedding("emb", 0, **given)])  # type: ignore[arg-type]
        run.log_records(
            [ds.track.Embedding("emb", 4, np.eye(3), [["a", "x"], ["b", "y"], ["c", "z"]], ["name", "kind"])]
        )
    with Reader(tmp_path / "run") as reader:
        (record,) = reader.records("emb")
        assert record.step == 4 and record.label_header == ["name", "kind"] and record.labels[2] == ["c", "z"]
        np.testing.assert_array_equal(record.features, np.eye(3, dtype=np.float32))
