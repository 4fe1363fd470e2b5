"""The Scalars view's answers (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...models import Answer, Number, Packed


class Scalars(Answer):
    """``/api/scalars``: a scalar tag's points in a step window, downsampled to at most ``max_points``.

    With ``encoding=json`` the four arrays are lists of numbers (non-finite values as their names); with
    ``encoding=base64`` (what the page asks for) each is a :class:`Packed` array, exact to the bit."""

    run: str
    tag: str
    steps: list[int] | Packed
    values: list[Number] | Packed
    epochs: list[int] | Packed
    wall_times: list[Number] | Packed
    total: int = Field(description="points in the window before downsampling")
    downsampled: bool


class UnreadableRun(Answer):
    """A run whose series cannot be read (a damaged file): left out of ``series``, with why."""

    run: str
    error: str


class ScalarsBatch(Answer):
    """``/api/scalars/batch``: one tag of many runs, each run's part the answer of ``/api/scalars``."""

    tag: str
    series: list[Scalars]
    unreadable: list[UnreadableRun]


class CustomChart(Answer):
    """A chart of a custom-scalars layout, with the scalar tags it draws per run."""

    title: str
    type: Literal["multiline", "margin"]
    tags: list[str] = Field(description="a multiline chart's regexes; a margin chart's value, lower, upper tags")
    runs: dict[str, list[str]] = Field(description="run -> the scalar tags the chart draws of it")
    error: str | None = Field(default=None, description="why the chart draws nothing (a regex that does not compile)")


class CustomCategory(Answer):
    category: str
    charts: list[CustomChart]


class CustomScalars(Answer):
    """``/api/custom_scalars``: the layout drawn (``?layout=`` edited in the page, or every run's
    ``add_custom_scalars`` layouts merged) and its charts with the tags they match in each run."""

    layout: dict[str, dict[str, list[Any]]] = Field(
        description='{category: {chart title: ["Multiline", [regex, ...]] or ["Margin", [value, lower, upper]]}}'
    )
    categories: list[CustomCategory]


# ``/api/events``: server-sent events, one each time one of the runs changes (see ``live.py``).
EVENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'server-sent events: `ready` once, then `points` with `{"runs": [...]}` each time some of '
        "the runs change",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
