"""The board's views, one folder each (TensorBoard's plugin pattern): adding a view is adding a folder.

A view's folder ``views/<name>/`` holds:

* ``__init__.py``: its declaration, ``VIEW = View(...)``: name, tab title, place among the tabs, the record kinds
  it shows, when its tab appears (``is_active``), the conventions its page module shares with Python, and the
  factory of its per-app state (caches, job queues: they hang off the app, never off a module);
* ``data.py``: its pure functions, store in, JSON-able value out, nothing about HTTP;
* ``routes.py``: ``routes(router, served, state)``, its thin FastAPI routes over ``data.py`` (imported by the server
  only, so the declaration and the pure functions load without the ``board`` extra);
* ``view.js``: its page module, an ES module whose default export ``create(core, entry)`` returns the view's object
  (``title``, ``mount(container)``, ``refresh()``); ``core`` is the page's shared module (``static/core.js``),
  ``entry`` the view's line of :func:`registry`.

:func:`registry` is what the page asks first (``static/views.json``): every view with its kinds, module path and
conventions; ``/api/views`` says which tabs have data. This module finds the folders itself: no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ...store import RunSummary
from ...store.records import codecs
from ..common import Served, source_of
from ..sources import Source

__all__ = ["View", "active", "find", "kinds_of", "registry", "views"]

HERE = Path(__file__).parent


def kinds_of(view: str) -> tuple[str, ...]:
    """The record kinds whose codec names ``view`` as its tab (``Codec.view``), in the codecs' order."""
    return tuple(c.kind for c in codecs() if c.view == view)


def _any_kind(kinds: Sequence[str]) -> Callable[[Source, list[RunSummary], Any], bool]:
    def active(served: Source, runs: list[RunSummary], state: Any) -> bool:
        return any(kind in kinds for run in runs for kind in run.tags.values())

    return active


@dataclass(frozen=True)
class View:
    """One view of the board (one tab).

    Attributes:
        name: its folder's name, the tab's ``data-view`` and the ``?view=`` of the page's URL.
        title: the tab's label.
        order: its place among the tabs (smaller first).
        kinds: the record kinds it shows.
        is_active: ``(source, runs, state) -> bool``: whether its tab appears, given the listing of every run and
            the view's state; by default when some run holds a tag of one of ``kinds``.
        conventions: JSON-able values its page module shares with Python (tag prefixes, groups), served once in
            :func:`registry` instead of being copied into JavaScript.
        state: a factory of the view's per-app state (caches, job queues), kept on ``app.state.views[name]`` and
            handed to its routes; ``None`` for a view without any.
        warm: ``(source, runs, state) -> None``, run in the background as a server starts when the tab appears:
            fills the view's state with what its first answer reads (``None``: nothing to do).
        traces: the plotly trace types its page module draws; the page starts loading plotly's whole build as the
            view opens when one is not in the basic build's (static/core.js) instead of when its first chart asks.
    """

    name: str
    title: str
    order: int
    kinds: tuple[str, ...] = ()
    is_active: Callable[[Source, list[RunSummary], Any], bool] | None = None
    conventions: Mapping[str, Any] = field(default_factory=dict)
    state: Callable[[], Any] | None = None
    warm: Callable[[Source, list[RunSummary], Any], None] | None = None
    traces: tuple[str, ...] = ("scatter",)

    @property
    def module(self) -> str:
        """The page module's address, relative to the page."""
        return f"static/views/{self.name}/view.js"

    @property
    def script(self) -> Path:
        """The page module's file."""
        return HERE / self.name / "view.js"

    @property
    def package(self) -> str:
        """The view's Python package (``routes.py`` is its ``.routes``)."""
        return f"{__name__}.{self.name}"

    def active(self, served: Source, runs: list[RunSummary], state: Any = None) -> bool:
        """Whether the tab appears (:attr:`is_active`); ``state`` is the view's (a fresh one when ``None``)."""
        if state is None and self.state is not None:
            state = self.state()
        return (self.is_active or _any_kind(self.kinds))(served, runs, state)


@cache
def _found() -> tuple[View, ...]:
    found = []
    for module in pkgutil.iter_modules([str(HERE)]):
        if not module.ispkg:
            continue
        view = importlib.import_module(f"{__name__}.{module.name}").VIEW
        if view.name != module.name:
            raise RuntimeError(f"the view in folder {module.name!r} is named {view.name!r}: name it as its folder")
        found.append(view)
    return tuple(sorted(found, key=lambda v: (v.order, v.name)))


def all_views() -> tuple[View, ...]:
    """Every view, in the order of the tabs."""
    return _found()


def find(name: str) -> View | None:
    """The view named ``name``, or ``None``."""
    return next((v for v in _found() if v.name == name), None)


def registry() -> list[dict[str, Any]]:
    """What the page loads first: ``[{"name", "title", "kinds", "module", "conventions", "traces"}]``, in the tabs'
    order."""
    return [
        {
            "name": v.name,
            "title": v.title,
            "kinds": list(v.kinds),
            "module": v.module,
            "conventions": v.conventions,
            "traces": list(v.traces),
        }
        for v in _found()
    ]


def active(
    root: Served, states: Mapping[str, Any] | None = None, listed: list[RunSummary] | None = None
) -> dict[str, bool]:
    """Which tabs have data: ``{view name: bool}`` for every view, in the tabs' order; ``states``: each view's
    state by name (an app's ``app.state.views``), else fresh ones; ``listed``: the runs, when the caller has just
    listed them (else listed now)."""
    served = source_of(root)
    if listed is None:
        listed = served.runs()
    return {v.name: v.active(served, listed, (states or {}).get(v.name)) for v in _found()}


def views() -> dict[str, tuple[str, ...]]:
    """View name -> the record kinds it shows."""
    return {v.name: v.kinds for v in _found()}
