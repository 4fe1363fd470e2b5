"""Graphs: a model's structure, stored as JSON at step 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import Codec, FileSink, FileSource, Stored, register

KIND = "graph"


@dataclass(frozen=True)
class Graph:
    """A model's structure as data a dashboard can draw.

    ``modules``: the module hierarchy, nodes ``{"name", "type", "parent", "params", "shape"}``.
    ``ops``: the op-level graph, ``{"nodes": [{"name", "op", "target", "shape"}], "edges": [[src, dst], ...]}``,
    or ``None`` with ``ops_method`` saying why (e.g. ``"unavailable: <reason>"``).
    """

    modules: list[dict[str, Any]]
    ops: dict[str, Any] | None
    ops_method: str
    tag: str = "model"
    notes: list[str] = field(default_factory=list)


@register
class GraphCodec(Codec):
    kind = KIND
    record = Graph
    stepped = False
    view = "graph"

    def encode(self, record: Graph, files: FileSink) -> Stored:
        data = {"modules": record.modules, "ops": record.ops, "ops_method": record.ops_method, "notes": record.notes}
        return Stored(0, None, data)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Graph:
        data = stored.data
        return Graph(data["modules"], data["ops"], data["ops_method"], tag=tag, notes=data["notes"])
