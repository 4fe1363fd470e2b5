"""The Distributions view's route: ``/api/histograms``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...http import JSONAnswer, Step
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/histograms", response_model=models.Histograms)
    def histograms(
        run: str,
        tag: str,
        start: Step = None,
        end: Step = None,
        max_steps: int = Query(data.DEFAULT_MAX_STEPS, ge=2, le=1_000_000),
    ) -> Response:
        return JSONAnswer(data.histograms(served, run, tag, start, end, max_steps))
