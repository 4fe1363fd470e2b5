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
    is_active=lambda served, runs: False,  # no record kind: the board's model decides (state_active)
    state=ExploreState,
    state_active=lambda state: state.explorer is not None,
)

__all__ = ["VIEW", "configure"]
