"""Where a run is: a run directory (SQLite), or a named run in a PostgreSQL database; the backend that serves it.

``ds.Run`` and ``deepscope.store.Reader`` take the same locations, through :func:`locate` and the two openers.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError
from .backend import ReadBackend, WriteBackend
from .postgres import PostgresReader, PostgresWriter, is_url
from .schema import RUNS_DIR
from .sqlite import SQLiteReader, SQLiteWriter

# Where runs go when a run is given by name alone: a directory of runs, or a PostgreSQL URL for a team's store.
STORE_VARIABLE = "DEEPSCOPE_STORE"


def locate(location: str | os.PathLike[str] | None, name: str | None) -> tuple[str | os.PathLike[str], str | None]:
    """Where a run is: ``location`` as given, or with none, the run ``name`` in the store ``DEEPSCOPE_STORE`` names
    (a PostgreSQL URL, or a directory of runs), by default the directory ``runs``."""
    if location is not None:
        return location, name
    if not name:
        raise StoreError(f"give a run's path, or its name (in the store ${STORE_VARIABLE} names, default {RUNS_DIR!r})")
    store = os.environ.get(STORE_VARIABLE) or RUNS_DIR
    return (store, name) if is_url(store) else (Path(store) / name, name)


def open_writer(
    location: str | os.PathLike[str], resume: bool, name: str | None, rank: int | None = None
) -> WriteBackend:
    """The backend of a location: a PostgreSQL URL (the run named ``name`` in it), else a run directory; ``rank``:
    this process's rank in a distributed job (:mod:`.ranks`), ``None`` for a single process."""
    if is_url(location):
        return PostgresWriter(str(location), name or "", resume, rank)
    return SQLiteWriter(Path(location).absolute(), resume, rank)


def open_reader(location: str | os.PathLike[str], name: str | None) -> ReadBackend:
    """The backend of a location to read: a PostgreSQL URL with ``name``, else a run directory (or its ``run.db``)."""
    if is_url(location):
        return PostgresReader(str(location), name)
    return SQLiteReader(Path(location))
