"""The Images view's route: ``/api/images``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/images", response_model=models.Images)
    def images(run: str, tag: str) -> Response:
        return JSONAnswer(data.images(served, run, tag))
