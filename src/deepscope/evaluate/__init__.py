"""After training: how well a classifier performs, and how faithful its explanations are."""

from .classification import BinaryReport, ConfusionMatrix, OneVsRest, binary_report, confusion_matrix, evaluate_model
from .faithfulness import Faithfulness, faithfulness
from .sanity import SanityCheck, sanity_check

__all__ = [
    "BinaryReport",
    "ConfusionMatrix",
    "Faithfulness",
    "OneVsRest",
    "SanityCheck",
    "binary_report",
    "confusion_matrix",
    "evaluate_model",
    "faithfulness",
    "sanity_check",
]
