"""The Evaluation view's routes: ``/api/confusion_matrix``, ``/api/pr_curve``, ``/api/sanity_check``,
``/api/faithfulness``, ``/api/method_comparison``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ...http import JSONAnswer, Step
from ...sources import Source
from . import data, models


def routes(router: APIRouter, served: Source, state: Any) -> None:
    @router.get("/api/confusion_matrix", response_model=models.ConfusionMatrix)
    def confusion_matrix(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.confusion_matrix(served, run, tag, step))

    @router.get("/api/pr_curve", response_model=models.PRCurve)
    def pr_curve(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.pr_curve(served, run, tag, step))

    @router.get("/api/sanity_check", response_model=models.SanityCheck)
    def sanity_check(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.sanity_check(served, run, tag, step))

    @router.get("/api/faithfulness", response_model=models.Faithfulness)
    def faithfulness(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.faithfulness(served, run, tag, step))

    @router.get("/api/method_comparison", response_model=models.MethodComparison)
    def method_comparison(run: str, tag: str, step: Step = None) -> Response:
        return JSONAnswer(data.method_comparison(served, run, tag, step))
