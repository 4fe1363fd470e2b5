"""After training: how well a classifier performs, and how faithful its explanations are."""

from .classification import BinaryReport, ConfusionMatrix, OneVsRest, binary_report, confusion_matrix, evaluate_model
from .faithfulness import Faithfulness, faithfulness

__all__ = [
    "BinaryReport",
    "ConfusionMatrix",
    "Faithfulness",
    "OneVsRest",
    "binary_report",
    "confusion_matrix",
    "evaluate_model",
    "faithfulness",
]
