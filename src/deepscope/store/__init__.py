"""The embedded store: one SQLite database per run (WAL mode), files beside it, read live by the dashboard.

>>> from deepscope.store import Reader, list_runs
>>> [run.name for run in list_runs("runs")]
>>> Reader("runs/exp1").scalars("train/loss", max_points=2000)
"""

from .catalog import RunSummary, list_runs
from .reader import Reader, Series, UnreadableRecord, downsample
from .schema import SCHEMA_VERSION
from .writer import Writer

__all__ = ["SCHEMA_VERSION", "Reader", "RunSummary", "Series", "UnreadableRecord", "Writer", "downsample", "list_runs"]
