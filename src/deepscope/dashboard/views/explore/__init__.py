"""Explore: a data item explained on demand (method, target, layer) with the model a board was given, in a worker
process; shown only on a board given a model (``ds.board(runs, model=..., data=...)``, ``deepscope board DIR
--model pkg.module:make_model --data pkg.module:make_data``)."""

from __future__ import annotations

from .. import View
from .data import ExploreState, configure

VIEW = View(
    name="explore",
    title="Explore",
    order=65,
    # No record kind: the tab appears on a board given a model (its state's explorer).
    is_active=lambda served, runs, state: state is not None and state.explorer is not None,
    state=ExploreState,
)

__all__ = ["VIEW", "configure"]
