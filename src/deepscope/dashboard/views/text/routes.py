"""The Text view's route: ``/api/text``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/text", response_model=models.Text)
    def text(run: str, tag: str) -> Response:
        return JSONAnswer(data.text(served, run, tag))
