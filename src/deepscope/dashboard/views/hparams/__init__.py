"""HParams: the runs' configurations (``Run(config=)``, ``SummaryWriter.add_hparams``, Lightning's hyperparameters)
beside the final, lowest and highest value of chosen metrics: a sortable, filterable table, parallel coordinates, a
metric-against-hyperparameter scatter, and the difference between two runs' configurations."""

from __future__ import annotations

from .. import View
from .data import HParams, is_active, warm

VIEW = View(
    name="hparams",
    title="HParams",
    order=15,
    kinds=(),
    is_active=is_active,
    state=HParams,
    warm=warm,
    traces=("parcoords", "scatter"),
)
