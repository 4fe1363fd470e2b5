"""deepscope: see inside PyTorch neural networks.

>>> import deepscope as ds
>>> e = ds.explain(model, images, method="gradcam")
>>> e.heatmap.shape   # [N, H, W]
>>> ds.board("runs")  # in a notebook: the dashboard inline

Every name below is imported on first use (PEP 562), so ``import deepscope`` stays light and ``deepscope board``
never loads torch: ``ds.explain`` imports the explanation methods (and torch) the first time it is looked up.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, DeepscopeError, LayerNotFoundError, TargetError

# What type checkers and IDEs see; at run time __getattr__ imports these on first use. The names that are also
# submodules (embed.neighbors, evaluate.faithfulness, ...) come from their defining modules: imported from the
# package inside this block, mypy takes them for redefinitions.
if TYPE_CHECKING:
    from .dashboard import board
    from .embed.extract import Features, embed
    from .embed.neighbors import Neighbors, neighbors
    from .embed.project import Projection, Projections, project
    from .evaluate import (
        binary_report,
        compare_methods,
        confusion_matrix,
        data_randomization_check,
        evaluate_model,
        sanity_check,
    )
    from .evaluate.confidently_wrong import confidently_wrong
    from .evaluate.faithfulness import faithfulness
    from .explain import DatasetExplanation, compare, describe, explain, explain_dataset, methods
    from .explanation import Explanation, MultiInputExplanation
    from .features.activations import activations, dead_units
    from .features.dream import dream
    from .features.filters import filters
    from .features.maximize import maximize
    from .features.multifaceted import multifaceted
    from .features.patches import top_patches
    from .features.receptive_field import receptive_field
    from .render import overlay
    from .targets import Unit, probability
    from .track import Run
    from .track.probes import Probes
    from .track.tensorboard import SummaryWriter

__version__ = "0.1.0"

# Public name -> the module that defines it (relative to this package), imported when the name is first looked up.
_LAZY = {
    "board": ".dashboard",
    **dict.fromkeys(["Features", "Neighbors", "Projection", "Projections", "embed", "neighbors", "project"], ".embed"),
    **dict.fromkeys(
        [
            "binary_report",
            "compare_methods",
            "confidently_wrong",
            "confusion_matrix",
            "data_randomization_check",
            "evaluate_model",
            "faithfulness",
            "sanity_check",
        ],
        ".evaluate",
    ),
    **dict.fromkeys(["DatasetExplanation", "compare", "describe", "explain", "explain_dataset", "methods"], ".explain"),
    **dict.fromkeys(["Explanation", "MultiInputExplanation"], ".explanation"),
    **dict.fromkeys(
        ["activations", "dead_units", "dream", "filters", "maximize", "multifaceted", "receptive_field", "top_patches"],
        ".features",
    ),
    "overlay": ".render",
    **dict.fromkeys(["Unit", "probability"], ".targets"),
    "Run": ".track",
    "Probes": ".track.probes",
    "SummaryWriter": ".track.tensorboard",
}

__all__ = [
    "BadInputError",
    "DatasetExplanation",
    "DeepscopeError",
    "Explanation",
    "Features",
    "LayerNotFoundError",
    "MultiInputExplanation",
    "Neighbors",
    "Probes",
    "Projection",
    "Projections",
    "Run",
    "SummaryWriter",
    "TargetError",
    "Unit",
    "__version__",
    "activations",
    "binary_report",
    "board",
    "compare",
    "compare_methods",
    "confidently_wrong",
    "confusion_matrix",
    "data_randomization_check",
    "dead_units",
    "describe",
    "dream",
    "embed",
    "evaluate_model",
    "explain",
    "explain_dataset",
    "faithfulness",
    "filters",
    "maximize",
    "methods",
    "multifaceted",
    "neighbors",
    "overlay",
    "probability",
    "project",
    "receptive_field",
    "sanity_check",
    "top_patches",
]

if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise read every unknown ds.<name> as Any

    def __getattr__(name: str) -> Any:
        """Import the module behind public ``name`` on first use and keep the value as a module attribute."""
        if name not in _LAZY:
            if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
                return importlib.import_module(f".{name}", __name__)  # ds.features, ds.evaluate: the subpackages
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: importing a submodule named like a function (``deepscope.explain``,
    ``deepscope.embed``) must not bind the submodule over that function, as the import system otherwise does."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
