"""The Explanations view's routes: ``/api/explanations`` (a set at a step) and ``/api/probe`` (one input of a tag
through its steps, beside a loss curve)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer, Step
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/explanations", response_model=models.Explanations)
    def explanations(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.explanations(served, run, tag, step))

    @router.get("/api/probe", response_model=models.Probe)
    def probe(run: str, tag: str, index: int = 0, loss: str | None = None) -> Response:
        return JSONAnswer(data.probe(served, run, tag, index, loss))
