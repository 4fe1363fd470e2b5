"""The Graph view's route: ``/api/graph``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/graph", response_model=models.Graph)
    def graph(run: str, tag: str = "model") -> Response:
        return JSONAnswer(data.graph(served, run, tag))
