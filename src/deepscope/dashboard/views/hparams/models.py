"""The HParams view's answers (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...models import Answer, Number

# A flattened configuration's value: a number, a string (lists and other values as their JSON text), a boolean.
Value = Number | str | bool | None


class Summary(Answer):
    """A metric of a run: its last value and step, least and greatest finite values, and how many points."""

    last: Number
    step: int
    min: float | None
    max: float | None
    count: int


class ConfiguredRun(Answer):
    name: str
    status: str
    config: dict[str, Value] = Field(description="dotted name -> value")
    metrics: dict[str, Summary | None] = Field(description="each chosen metric's summary, null without points")


class HParams(Answer):
    """``/api/hparams``: every run with a config, its flattened config and a summary of each chosen metric."""

    hparams: list[str] = Field(description="every config name, in natural order")
    metrics: list[str] = Field(description="every scalar tag of those runs")
    chosen: list[str] = Field(description="the metrics summarised")
    runs: list[ConfiguredRun]


class DiffRow(Answer):
    name: str
    values: list[Value] = Field(min_length=2, max_length=2, description="the first run's, the second's")
    only: Literal[0, 1] | None = Field(description="which run alone has the name, or null")


class ConfigDiff(Answer):
    """``/api/hparams/diff``: the config names whose values differ between two runs."""

    runs: list[str] = Field(min_length=2, max_length=2)
    rows: list[DiffRow]
    same: int = Field(description="how many names hold equal values")
