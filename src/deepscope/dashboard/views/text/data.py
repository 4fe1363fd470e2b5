"""What the Text view answers: the notes of a tag."""

from __future__ import annotations

from typing import Any

from ....store.records.text import KIND as TEXT
from ...common import Served, records_of


def text(root: Served, run: str, tag: str) -> dict[str, Any]:
    """The text notes of a tag, in the order logged."""
    records = records_of(root, run, tag, TEXT)
    return {"run": run, "tag": tag, "points": [{"step": t.step, "text": t.text} for t in records]}
