"""deepscope: see inside PyTorch neural networks.

>>> import deepscope as ds
>>> e = ds.explain(model, images, method="gradcam")
>>> e.heatmap.shape   # [N, H, W]
>>> ds.board("runs")  # in a notebook: the dashboard inline
"""

from .dashboard import board
from .embed import Features, Neighbors, Projection, Projections, embed, neighbors, project
from .errors import BadInputError, DeepscopeError, LayerNotFoundError, TargetError
from .evaluate import (
    binary_report,
    compare_methods,
    confidently_wrong,
    confusion_matrix,
    data_randomization_check,
    evaluate_model,
    faithfulness,
    sanity_check,
)
from .explain import describe, explain, methods
from .explanation import Explanation
from .render import compare, overlay
from .targets import Unit
from .track import Run
from .track.tensorboard import SummaryWriter

__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "DeepscopeError",
    "Explanation",
    "Features",
    "LayerNotFoundError",
    "Neighbors",
    "Projection",
    "Projections",
    "Run",
    "SummaryWriter",
    "TargetError",
    "Unit",
    "__version__",
    "binary_report",
    "board",
    "compare",
    "compare_methods",
    "confidently_wrong",
    "confusion_matrix",
    "data_randomization_check",
    "describe",
    "embed",
    "evaluate_model",
    "explain",
    "faithfulness",
    "methods",
    "neighbors",
    "overlay",
    "project",
    "sanity_check",
]
