"""Graph: a model's module hierarchy, its parameters by module, and its op graph."""

from __future__ import annotations

from .. import View, kinds_of

VIEW = View(name="graph", title="Graph", order=30, kinds=kinds_of("graph"), traces=("icicle", "scatter"))
