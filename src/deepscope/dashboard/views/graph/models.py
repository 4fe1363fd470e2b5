"""The Graph view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...models import Answer


class Graph(Answer):
    """``/api/graph``: a stored model graph (the last one logged under the tag)."""

    run: str
    tag: str
    modules: list[dict[str, Any]] = Field(description='the module tree: {"name", "type", "parent", "params", ...}')
    ops: list[dict[str, Any]] | None = Field(description="the traced operations, or null where tracing failed")
    ops_method: str = Field(description="how the operations were found, or why not")
