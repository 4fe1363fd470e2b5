"""Explanations: a gallery of inputs with each method's heatmap, misclassified ones marked."""

from __future__ import annotations

from .. import View, kinds_of

VIEW = View(name="explanations", title="Explanations", order=60, kinds=kinds_of("explanations"))
