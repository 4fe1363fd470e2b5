"""Several methods on the same inputs, drawn side by side: ``ds.compare``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..render import NotebookFigure, explanation_grid
from .base import explain


def compare(
    model: nn.Module,
    inputs: Tensor,
    methods: Sequence[str] = ("saliency", "guided_backprop", "gradcam", "guided_gradcam"),
    target: Any = None,
    options: dict[str, dict[str, Any]] | None = None,
    **grid: Any,
) -> NotebookFigure:
    """Explain ``inputs`` with several methods and draw them side by side (inputs as rows).

    ``options`` maps a method name to its options, e.g. ``{"occlusion": {"window": 8}}``; ``grid`` goes to
    :func:`deepscope.render.explanation_grid` (``cmap``, ``alpha``, ``max_inputs``, ``titles``, ``marks``).
    """
    options = options or {}
    explanations = [explain(model, inputs, method=m, target=target, **options.get(m, {})) for m in methods]
    return explanation_grid(explanations, **grid)
