"""``deepscope export-tensorboard``: a run written as event files, read back with TensorBoard's own
``EventAccumulator`` and compared with what the run holds."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard")
from PIL import Image as PILImage
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import deepscope as ds
from deepscope.cli import main
from deepscope.errors import BadInputError
from deepscope.store import Reader
from deepscope.track.export_tensorboard import export_tensorboard

RATE = 8000


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("export")
    generator = torch.Generator().manual_seed(0)
    with ds.SummaryWriter(base / "run") as writer:
        for step in (0, 5, 10):
            writer.add_scalar("loss", 1 / 3 + step, step)  # not a float32: the export rounds as TensorBoard does
            writer.add_histogram("weights", torch.randn(500, generator=generator) * (step + 1), step, bins=16)
        writer.add_scalar("acc", 0.9, 3, walltime=1234.5)
        writer.add_image("rgb", torch.rand(3, 5, 7, generator=generator), 1)
        writer.add_image(
            "grey", torch.randint(0, 256, (4, 6), dtype=torch.uint8, generator=generator), 2, dataformats="HW"
        )
        writer.add_text("notes", "hello board", 4)
        scores = torch.rand(40, generator=generator)
        writer.add_pr_curve("pr", (torch.rand(40, generator=generator) < scores).int(), scores, 6, num_thresholds=11)
        writer.add_audio("tone", 0.5 * torch.sin(torch.arange(RATE) * 0.3), 7, sample_rate=RATE)
        writer.add_video("clip", torch.randint(0, 256, (1, 3, 3, 4, 5), dtype=torch.uint8, generator=generator), 8)
        writer.add_custom_scalars({"Main": {"losses": ["Multiline", ["loss"]]}})
        writer.add_embedding(torch.randn(4, 3, generator=generator), metadata=list("abcd"))
    with pytest.warns(UserWarning, match=r"not exported.*default \(embedding\)"):
        tags = export_tensorboard(base / "run", base / "tb")
    return base / "run", base / "tb", tags


def accumulator(path: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(path), size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def test_scalars_are_the_float32_values_at_their_steps(exported: tuple[Path, Path, dict[str, str]]) -> None:
    run, tb, tags = exported
    acc = accumulator(tb)
    with Reader(run) as reader:
        for tag in ("loss", "acc"):
            series, events = reader.scalars(tag), acc.Scalars(tag)
            assert [e.step for e in events] == series.steps.tolist()
            assert [e.value for e in events] == series.values.astype(np.float32).tolist()
            assert [e.wall_time for e in events] == series.wall_times.tolist()
    assert acc.Scalars("acc")[0].wall_time == 1234.5 and tags["loss"] == "scalar"


def test_histograms_keep_counts_and_statistics(exported: tuple[Path, Path, dict[str, str]]) -> None:
    run, tb, _ = exported
    events = accumulator(tb).Histograms("weights")
    with Reader(run) as reader:
        records = reader.records("weights")
    assert [e.step for e in events] == [r.step for r in records] == [0, 5, 10]
    for event, record in zip(events, records, strict=True):
        h = event.histogram_value
        assert (h.min, h.max, h.num) == pytest.approx((record.low, record.high, record.count))
        assert h.sum == pytest.approx(record.mean * record.count) and h.sum_squares == pytest.approx(record.norm**2)
        assert h.bucket == record.counts.tolist()
        np.testing.assert_allclose(h.bucket_limit, np.linspace(record.low, record.high, 17)[1:])


def test_images_and_clip_are_the_stored_pictures(exported: tuple[Path, Path, dict[str, str]]) -> None:
    run, tb, _ = exported
    acc = accumulator(tb)
    with Reader(run) as reader:
        for tag in ("rgb", "grey"):
            (event,) = acc.Images(tag)
            (record,) = reader.records(tag)
            with PILImage.open(io.BytesIO(event.encoded_image_string)) as picture:
                pixels = np.asarray(picture)
            assert event.step == record.step
            np.testing.assert_array_equal(
                pixels if pixels.ndim == record.pixels.ndim else pixels[..., 0], record.pixels
            )
        (clip,) = acc.Images("clip")
        (video,) = reader.records("clip")
    with PILImage.open(io.BytesIO(clip.encoded_image_string)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3 and (clip.width, clip.height) == (5, 4) and clip.step == 8
    assert video.frames.shape == (3, 4, 5, 3)


def test_text_pr_curve_audio_and_layout(exported: tuple[Path, Path, dict[str, str]]) -> None:
    run, tb, tags = exported
    acc = accumulator(tb)
    (note,) = acc.Tensors("notes/text_summary")
    assert tensor_util.make_ndarray(note.tensor_proto).item().decode() == "hello board" and note.step == 4
    (pr,) = acc.Tensors("pr")
    rows = tensor_util.make_ndarray(pr.tensor_proto)
    with Reader(run) as reader:
        (curve,) = reader.records("pr")
    for row, name in enumerate(("tp", "fp", "tn", "fn", "precision", "recall")):
        np.testing.assert_allclose(rows[row], getattr(curve, name), rtol=1e-6)
    (sound,) = acc.Audio("tone")
    assert sound.sample_rate == RATE and sound.length_frames == RATE and sound.step == 7
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    assert "default" not in tags and tags["clip"] == "video" and tags["custom_scalars"] == "custom_scalars"


def test_refuses_existing_event_files_and_says_what_to_install(
    exported: tuple[Path, Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, tb, _ = exported
    before = sorted(p.name for p in tb.iterdir())
    with pytest.raises(BadInputError, match="already holds TensorBoard event files"):
        export_tensorboard(run, tb)
    assert sorted(p.name for p in tb.iterdir()) == before
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'deepscope\[tensorboard\]'"):
        export_tensorboard(run, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_cli(exported: tuple[Path, Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _, tags = exported
    with pytest.warns(UserWarning, match="not exported"):
        assert main(["export-tensorboard", str(run), str(tmp_path / "tb")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'tb'}: {len(tags)} tags"
    assert accumulator(tmp_path / "tb").Scalars("loss")
    assert main(["export-tensorboard", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "no deepscope run" in capsys.readouterr().err
