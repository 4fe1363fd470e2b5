"""What the Graph view answers: a stored model graph."""

from __future__ import annotations

from typing import Any

from ....store.records.graph import KIND as GRAPH
from ...common import NotFound, Served, clean, records_of


def graph(root: Served, run: str, tag: str = "model") -> dict[str, Any]:
    """The model graph stored under ``tag`` (the last one, if logged more than once)."""
    records = records_of(root, run, tag, GRAPH)
    if not records:
        raise NotFound(f"run {run!r} has no graph under {tag!r}")
    g = records[-1]
    return clean({"run": run, "tag": tag, "modules": g.modules, "ops": g.ops, "ops_method": g.ops_method})
