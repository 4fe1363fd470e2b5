"""A run closed while a reader has it open (a board's request at that moment) is still one self-contained file: its
writer folds the WAL back into ``run.db`` itself, which the last connection to close, a read-only one, cannot do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

import deepscope as ds
from deepscope.store import Reader


def test_closing_with_a_reader_open_leaves_every_point_in_run_db(tmp_path: Path) -> None:
    path = tmp_path / "run"
    run = ds.Run(path, flush_interval=3600)
    run.log({"loss": 1.0}, step=0)
    run.flush()
    reader = Reader(path)  # open across the writer's close
    assert len(reader.scalars("loss")) == 1
    values = np.linspace(1.0, 0.0, 50)
    run.log_series("loss", np.arange(1, 51), values)
    run.close()
    reader.close()
    wal = path / "run.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # nothing left only in the WAL
    # run.db alone (as a copy of it would be read, without its WAL) holds every point.
    alone = sqlite3.connect(f"{(path / 'run.db').as_uri()}?immutable=1", uri=True)
    try:
        assert alone.execute("SELECT count(*) FROM scalar_chunks").fetchone()[0] >= 1
    finally:
        alone.close()
    with Reader(path) as again:
        series = again.scalars("loss")
        assert series.steps.tolist() == list(range(51)) and series.values[1:].tolist() == values.tolist()
        assert again.info()["status"] == "finished"
