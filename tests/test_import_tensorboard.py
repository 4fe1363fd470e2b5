"""What ``import-tensorboard`` says it left out: only what it really left out."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter as TBWriter

from deepscope.store import Reader
from deepscope.track.importer import import_tensorboard


def test_the_warning_names_only_what_was_skipped(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    rng = np.random.default_rng(0)
    with TBWriter(str(logs)) as writer:
        for step in range(3):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            writer.add_histogram("fc.weight", rng.normal(size=100), step)
        # A kind no importer knows: a tensor summary of a plugin of its own.
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="mine"))
        odd = Summary.Value(tag="odd", metadata=metadata, tensor=tensor_util.make_tensor_proto(np.ones(2)))
        writer._get_file_writer().add_summary(Summary(value=[odd]), 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (run,) = import_tensorboard(logs, tmp_path / "runs")
    (warning,) = [w for w in caught if issubclass(w.category, UserWarning)]
    left_out = str(warning.message).split("):", 1)[1].strip()
    assert left_out == "odd (mine)"  # not the histogram, which was imported
    with Reader(run) as reader:
        assert reader.tags() == {"loss": "scalar", "fc.weight": "histogram"}
        assert [record.count for record in reader.records("fc.weight")] == [100, 100, 100]
