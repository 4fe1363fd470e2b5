"""Record kinds as registered codecs: one module makes a kind that Run, the writer and Reader all handle, and the
store stands below everything that computes records (it imports neither torch nor deepscope.track)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

import deepscope as ds
from deepscope.dashboard import api
from deepscope.dashboard.views.images.data import MEDIA
from deepscope.errors import StoreError
from deepscope.store import Reader
from deepscope.store.records import Codec, FileSink, FileSource, Stored, codec, codec_for, codec_named, codecs
from deepscope.track import convert


@dataclass(frozen=True)
class Tally:
    """A kind made only for these tests: counts kept in a file beside the run, their names in the database."""

    tag: str
    step: int
    counts: np.ndarray
    names: list[str]
    wall_time: float | None = None


class TallyCodec(Codec):
    kind: ClassVar[str] = "test_tally"
    record: ClassVar[type] = Tally
    has_files: ClassVar[bool] = True

    def normalise(self, record: Tally) -> dict[str, Any]:
        counts = np.asarray(record.counts, dtype=np.int64)
        if counts.shape != (len(record.names),):
            raise ds.BadInputError(f"{record.tag!r}: one count per name")
        return {"counts": counts}

    def encode(self, record: Tally, files: FileSink) -> Stored:
        file = files.put(".bin", record.counts.astype("<i8").tobytes())
        return Stored(record.step, record.wall_time, {"names": record.names}, file)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Tally:
        assert stored.file is not None
        counts = np.frombuffer(files.read(stored.file), dtype="<i8")
        return Tally(tag, stored.step, counts, stored.data["names"], stored.wall_time)


@pytest.fixture
def tally_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TallyCodec`` registered for one test only."""
    monkeypatch.setattr(codec, "_BY_KIND", dict(codec._BY_KIND))
    monkeypatch.setattr(codec, "_BY_TYPE", dict(codec._BY_TYPE))
    codec.register(TallyCodec)


def test_a_kind_added_by_one_module_is_logged_stored_and_read_back(tmp_path, tally_kind):
    with ds.Run(tmp_path / "r") as run:
        run.log_records([Tally("votes", 3, [2, 5], ["yes", "no"]), Tally("votes", 4, np.array([1, 1]), ["a", "b"])])
        with pytest.raises(ds.BadInputError, match="one count per name"):
            run.log_records([Tally("votes", 5, [1], ["a", "b"])])
        with pytest.raises(ds.BadInputError, match="holds test_tally values; it cannot take a scalar"):
            run.log({"votes": 1.0})
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"votes": "test_tally"}
        first, second = reader.records("votes")
        assert (first.step, first.counts.tolist(), first.names) == (3, [2, 5], ["yes", "no"])
        assert (second.step, second.counts.tolist()) == (4, [1, 1])
        assert first.wall_time is not None and first.wall_time <= second.wall_time
        (step, file, data), _ = reader.files("votes")
        assert (
            step == 3 and file.endswith(".bin") and (tmp_path / "r" / file).is_file() and data == {"names": first.names}
        )
    with ds.Run(tmp_path / "r", resume=True) as run:  # a resumed run knows the tag's kind
        with pytest.raises(ds.BadInputError, match="holds test_tally values"):
            run.log({"votes": 1.0})
        run.log_records([dataclasses.replace(second, step=7)])
    with Reader(tmp_path / "r") as reader:
        assert [r.step for r in reader.records("votes")] == [3, 4, 7]


def test_an_unregistered_record_type_is_refused_naming_what_log_records_takes(tmp_path):
    with (
        ds.Run(tmp_path / "r") as run,
        pytest.raises(ds.BadInputError, match=r"cannot log a Tally; .*Histogram.*PRCurve"),
    ):
        run.log_records([Tally("votes", 0, np.ones(1), ["a"])])


def test_a_kind_this_deepscope_does_not_know_is_a_clear_error_when_read(tmp_path, monkeypatch, tally_kind):
    with ds.Run(tmp_path / "r") as run:
        run.log_records([Tally("votes", 0, [1], ["a"])])
    del codec._BY_KIND["test_tally"]  # a reader older than the kind
    with (
        Reader(tmp_path / "r") as reader,
        pytest.raises(StoreError, match="kind 'test_tally', which this deepscope"),
    ):
        reader.records("votes")


def test_each_kind_and_record_type_has_one_codec():
    every = list(codecs())
    assert len({c.kind for c in every}) == len({c.record for c in every}) == len(every) >= 16
    for c in every:
        assert codec_named(c.kind) is c and codec_for(c.record) is c
    with pytest.raises(StoreError, match="registered twice"):
        codec.register(type(every[0]))


def test_the_board_tabs_come_from_the_kinds():
    assert api.VIEWS["evaluation"] == tuple(c.kind for c in codecs() if c.view == "evaluation")
    assert set(api.VIEWS["images"]) == {"image", "audio", "video"} == set(MEDIA)
    assert all(kind for kinds in api.VIEWS.values() for kind in kinds)


def test_what_run_log_converts_is_registered_by_the_kinds():
    assert codec.loggables() == convert.LOGGABLE
    described = [loggable.description for loggable in convert.LOGGABLE]
    assert described[:2] == ["matplotlib Figures", "PIL images"] and "ConfusionMatrix" in described


def test_the_store_imports_neither_torch_nor_the_tracking_code():
    code = (
        "import sys, deepscope.store, deepscope.store.records\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('deepscope.track')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
