"""Which runs live under a directory: a scan of the file system, not a shared catalog file.

A run is any directory holding a ``run.db``. Scanning needs no lock and no file that every run must update, so
concurrent runs never contend, a crash can leave no stale entry, and runs moved, copied or deleted with ordinary
file tools are listed correctly the next time. The cost is one ``stat`` per directory and one small read-only
query per run (well under a millisecond each), paid by the dashboard, not by training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeepscopeError
from . import schema
from .reader import Reader


@dataclass(frozen=True)
class RunSummary:
    """One run found under a root.

    Attributes:
        name: the run directory's path relative to the root, with ``/`` separators.
        path: the run directory.
        status: ``"running"`` (a writer holds it), ``"finished"``, ``"failed"`` (closed by an exception),
            ``"interrupted"`` (its writer died without closing it) or ``"unreadable"`` (see ``error``).
        created_at: seconds since the epoch, or ``None`` if unreadable.
        tags: tag name -> kind.
        error: why the run could not be read, for ``"unreadable"``.
        config: the run's configuration (:meth:`Reader.config`) where the listing read it (a directory's runs),
            ``None`` where it did not (a database's runs) or could not (a damaged config: reading it says why).
    """

    name: str
    path: Path
    status: str
    created_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    config: dict[str, Any] | None = None


def list_runs(root: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run under ``root`` (at any depth; a run's own directory is not searched further), sorted by name; or
    every run in the PostgreSQL database ``root`` names (``postgresql://...``; then ``path`` is the run's name).

    A run that cannot be read is listed as ``"unreadable"`` with the reason, so one damaged file does not hide
    the others.
    """
    from . import postgres

    if postgres.is_url(root):
        return [
            RunSummary(name, Path(name), status, created_at, tags)
            for name, status, created_at, tags in postgres.list_runs(str(root))
        ]
    root = Path(root)
    if not root.is_dir():
        raise DeepscopeError(f"{root} is not a directory")
    return sorted((summary(root, run_dir) for run_dir in run_directories(root)), key=lambda run: run.name)


def run_directories(root: Path) -> list[Path]:
    """The directories under ``root`` that hold a run (a run's own directory is not searched further; symlinked
    directories are not followed)."""
    return [directory for directory, _ in run_folders(root)]


def run_folders(root: Path) -> list[tuple[Path, list[str]]]:
    """:func:`run_directories`, each with the names of the files it holds (what a change token looks at)."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        if schema.DB_NAME in files:
            subdirectories.clear()
            found.append((Path(directory), files))
        else:
            subdirectories.sort()
    return found


def summary(root: Path, run_dir: Path) -> RunSummary:
    """What :func:`list_runs` says of the run in ``run_dir``: read now (its info, tag list and config: one small
    query each, in one opening of the run)."""
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    try:
        with Reader(run_dir) as reader:
            info = reader.info()
            tags = reader.tags()
            try:
                config: dict[str, Any] | None = reader.config()
            except DeepscopeError:  # a damaged config leaves the run listed; who reads the config learns why
                config = None
            return RunSummary(name, run_dir, info.get("status", "unknown"), info.get("created_at"), tags, None, config)
    except (DeepscopeError, OSError) as e:  # one damaged run is listed as such, never hides the others
        return RunSummary(name, run_dir, "unreadable", error=str(e))
