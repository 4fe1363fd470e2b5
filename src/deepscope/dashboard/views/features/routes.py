"""The Features view's route: ``/api/features``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/features", response_model=models.Features)
    def features(run: str) -> Response:
        return JSONAnswer(data.features(served, run))
