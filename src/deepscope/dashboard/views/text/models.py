"""The Text view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from pydantic import Field

from ...models import Answer, Unreadable


class Note(Answer):
    step: int
    text: str = Field(description="Markdown")


class Text(Answer):
    """``/api/text``: a tag's notes, in the order logged."""

    run: str
    tag: str
    points: list[Note]
    unreadable: list[Unreadable]
