"""Attribution methods. Importing this package registers every method family."""

from . import backprop, cam, deeplift, gradients, lrp, occlusion, perturbation, shapley  # noqa: F401  (registration)  # noqa: F401  (registration: Captum's families)
from .base import Method, Result, describe, explain, methods, register
from .dataset import DatasetExplanation, explain_dataset
from .side_by_side import compare

# isort: split
from . import fullgrad, rollout  # noqa: F401  (registration)

__all__ = [
    "DatasetExplanation",
    "Method",
    "Result",
    "compare",
    "describe",
    "explain",
    "explain_dataset",
    "methods",
    "register",
]
