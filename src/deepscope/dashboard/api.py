"""What the board's core answers, as pure functions (store in, JSON-able value out, nothing about HTTP): the runs,
and which views have data. Each view's own functions live in its folder (``views/<name>/data.py``, see
:mod:`deepscope.dashboard.views`), read through :mod:`deepscope.dashboard.common`.
"""

from __future__ import annotations

import os
from typing import Any

from ..store import RunSummary
from .common import NotFound, Served, file_url, source_of
from .sources import Source, file_path, run_dir, source
from .views import active, registry
from .views import views as view_kinds

__all__ = [
    "VIEWS",
    "NotFound",
    "Served",
    "file_path",
    "file_url",
    "overview",
    "registry",
    "run_dir",
    "runs",
    "served_root",
    "views",
]

# View name -> the record kinds it shows (each record kind names its view: ``Codec.view``), in the tabs' order.
VIEWS: dict[str, tuple[str, ...]] = view_kinds()


def runs(root: Served, listed: list[RunSummary] | None = None) -> list[dict[str, Any]]:
    """Every run under ``root``, sorted by name: ``{"name", "status", "created_at", "tags": {tag: kind}, "error"}``.

    Reads each run's info and tag list only, never a series; an unreadable run is listed with status
    ``"unreadable"`` and the reason in ``error``. ``listed``: the runs, when the caller has just listed them.
    """
    return [
        {"name": run.name, "status": run.status, "created_at": run.created_at, "tags": run.tags, "error": run.error}
        for run in (source_of(root).runs() if listed is None else listed)
    ]


def overview(root: Served, states: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page asks on each poll, from one listing of the runs: ``{"runs": runs(), "views": views()}``."""
    listed = source_of(root).runs()
    return {"runs": runs(root, listed), "views": active(root, states, listed)}


def views(root: Served, states: dict[str, Any] | None = None) -> dict[str, bool]:
    """Which tabs have data: ``{view: bool}``, each view's ``is_active`` over the listing of runs (with the view's
    state from ``states``, an app's ``app.state.views``, where it keeps what it read)."""
    return active(root, states)


def served_root(root: str | os.PathLike[str] | Source) -> Source:
    """What ``root`` names (:func:`~deepscope.dashboard.sources.source`): a directory of runs, or a PostgreSQL URL's
    database; a :class:`BadInputError` saying what is wrong with it."""
    return source(root)
