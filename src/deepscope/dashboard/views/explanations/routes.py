"""The Explanations view's route: ``/api/explanations``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer
from ...sources import Source
from . import data


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/explanations")
    def explanations(run: str, tag: str, step: int | None = None) -> Response:
        return JSONAnswer(data.explanations(served, run, tag, step))
