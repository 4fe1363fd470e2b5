"""The HParams view's routes: ``/api/hparams``, ``/api/hparams/diff``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: data.HParams) -> None:
    @router.get("/api/hparams", response_model=models.HParams)
    def hparams(metrics: Annotated[list[str] | None, Query()] = None) -> Response:
        return JSONAnswer(data.hparams(served, metrics, state))

    @router.get("/api/hparams/diff", response_model=models.ConfigDiff)
    def config_diff(a: str, b: str) -> Response:
        return JSONAnswer(data.config_diff(served, a, b, state))
