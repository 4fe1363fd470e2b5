"""What the Text view answers: the notes of a tag."""

from __future__ import annotations

from typing import Any

from ....store.records.text import KIND as TEXT
from ...common import Served, readable_records


def text(root: Served, run: str, tag: str) -> dict[str, Any]:
    """The text notes of a tag, in the order logged; ``unreadable``: the notes that cannot be read, with why."""
    records, unreadable = readable_records(root, run, tag, TEXT)
    points = [{"step": t.step, "text": t.text} for t in records]
    return {"run": run, "tag": tag, "points": points, "unreadable": unreadable}
