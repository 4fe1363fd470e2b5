"""The Explanations view's answers (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...models import Answer, Number, Unreadable

Label = str | int | None  # a class's name, or its index where the set names none


class Map(Answer):
    """One method's explanation of an input: the class it explained, its score, the pictures' addresses."""

    method: str
    target: Any = Field(description="the class explained (a name or an index)")
    score: Number
    overlay: str
    heatmap: str


class Item(Answer):
    index: int = Field(description="the input's place in the set (its id in the data set, for a sample)")
    label: Label
    prediction: Label
    correct: bool | None = Field(description="null without labels or predictions")
    input: str = Field(description="the input picture's address")
    maps: list[Map]


class Explanations(Answer):
    """``/api/explanations``: an explanation set at a step, input by input."""

    run: str
    tag: str
    unreadable: list[Unreadable]
    steps: list[int]
    step: int
    methods: list[str]
    advice: str
    misclassified: int
    items: list[Item]
    source: dict[str, Any] | None = Field(description='a data set sample\'s {"path", "items", "misclassified"}')


class Frame(Answer):
    step: int
    prediction: Label
    correct: bool | None
    loss: Number | None = Field(description="the loss's last point at or before the step")
    maps: list[Map]


class Loss(Answer):
    tag: str
    steps: list[int]
    values: list[Number]


class Probe(Answer):
    """``/api/probe``: one input of an explanation tag through every step it was explained at, beside a loss."""

    run: str
    tag: str
    index: int
    label: Label
    input: str
    methods: list[str]
    steps: list[int]
    frames: list[Frame]
    loss: Loss | None
    losses: list[str] = Field(description="the run's scalar tags holding 'loss'")
