"""Scalars: one chart per scalar tag, runs overlaid, plus the custom-scalars layouts (TensorBoard's)."""

from __future__ import annotations

from .. import View, kinds_of
from .data import encoded_cache

VIEW = View(name="scalars", title="Scalars", order=10, kinds=kinds_of("scalars"), state=encoded_cache)
