"""Custom-scalars layouts: how the board groups scalar tags into charts (TensorBoard's custom scalars), as JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, register

KIND = "custom_scalars"


@dataclass(frozen=True)
class ScalarLayout:
    """How the board groups scalar tags into charts: TensorBoard's custom-scalars layout.

    ``layout`` is ``{category: {chart title: ["Multiline", [tag regex, ...]] or ["Margin", [value, lower,
    upper]]}}``: a multiline chart overlays every scalar tag a regex finds (``re.search``); a margin chart draws
    the tag ``value`` with a band between the tags ``lower`` and ``upper``. The store keeps it as JSON; the last
    layout logged is the one shown.
    """

    layout: dict[str, dict[str, list[Any]]]
    tag: str = "custom_scalars"
    step: int = 0
    wall_time: float | None = None


def scalar_layout(tag: str, layout: object, patterns: bool = True) -> dict[str, dict[str, list[Any]]]:
    """A custom-scalars layout checked and as plain JSON-able lists (see :class:`ScalarLayout`).

    ``patterns=False`` checks the shape only, not that each multiline regex compiles: the board matches a layout
    edited in its page chart by chart, naming a bad regex in its chart and drawing the others.
    """

    def bad(why: str) -> BadInputError:
        return BadInputError(
            f"{tag!r}: {why}. A layout is {{category: {{chart title: ['Multiline', [tag regex, ...]] or "
            "['Margin', [value tag, lower tag, upper tag]]}}"
        )

    if not isinstance(layout, Mapping) or not layout:
        raise bad(f"expected a non-empty dict, not {type(layout).__name__}")
    checked: dict[str, dict[str, list[Any]]] = {}
    for category, charts in layout.items():
        if not isinstance(category, str) or not isinstance(charts, Mapping):
            raise bad(f"category {category!r} must be a str naming a dict of charts")
        checked[category] = {}
        for title, chart in charts.items():
            if not isinstance(title, str) or not isinstance(chart, Sequence) or len(chart) != 2:
                raise bad(f"chart {title!r} must be a str naming a pair [kind, tags]")
            kind, tags = chart
            if kind not in ("Multiline", "Margin"):
                raise bad(f"chart {title!r} has kind {kind!r}, not 'Multiline' or 'Margin'")
            if isinstance(tags, str) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
                raise bad(f"chart {title!r} needs a list of tag names")
            if kind == "Margin" and len(tags) != 3:
                raise bad(f"margin chart {title!r} names 3 tags (value, lower, upper), not {len(tags)}")
            why = pattern_error(tags) if patterns and kind == "Multiline" else None
            if why is not None:
                raise bad(f"chart {title!r}: {why}")
            checked[category][title] = [kind, list(tags)]
    return checked


def pattern_error(patterns: Sequence[str]) -> str | None:
    """Why one of a multiline chart's tag regexes does not compile (Python's ``re``, as the board matches them), or
    ``None``."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            return f"{pattern!r} is not a regular expression ({e})"
    return None


@register
class ScalarLayoutCodec(Codec):
    kind = KIND
    record = ScalarLayout

    def normalise(self, record: ScalarLayout) -> dict[str, Any]:
        return {"layout": scalar_layout(record.tag, record.layout)}

    def encode(self, record: ScalarLayout, files: FileSink) -> Stored:
        return Stored(int(record.step), record.wall_time, {"layout": record.layout})

    def decode(self, tag: str, stored: Stored, files: FileSource) -> ScalarLayout:
        return ScalarLayout(stored.data["layout"], tag=tag, step=stored.step, wall_time=stored.wall_time)
