"""The Graph view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...models import Answer


class OpNode(Answer):
    """An operation of the traced graph."""

    name: str
    op: str = Field(description="placeholder, call_module, call_function, call_method, get_attr or output")
    target: str
    shape: Any = Field(description="its output's shape (a list, or lists for several), or null")
    module: str | None = Field(description="the module it belongs to, where known")


class OpGraph(Answer):
    nodes: list[OpNode]
    edges: list[list[str]] = Field(description="[source, target] node names")


class Graph(Answer):
    """``/api/graph``: a stored model graph (the last one logged under the tag)."""

    run: str
    tag: str
    modules: list[dict[str, Any]] = Field(
        description='the module tree, one node per module: {"name", "type", "parent", "params", "shape", "calls"}'
    )
    ops: OpGraph | None = Field(
        description="the op-level graph (torch.fx or torch.export), or null where neither traced"
    )
    ops_method: str = Field(description='"torch.fx", "torch.export", or "unavailable: " and why')
