"""After training: how well a classifier performs, and how faithful its explanations are."""

from .classification import BinaryReport, ConfusionMatrix, OneVsRest, binary_report, confusion_matrix, evaluate_model
from .comparison import MethodComparison, MethodScore, compare_methods
from .confidently_wrong import ConfidentlyWrong, confidently_wrong
from .data_randomization import data_randomization_check
from .faithfulness import Faithfulness, faithfulness
from .sanity import SanityCheck, sanity_check

__all__ = [
    "BinaryReport",
    "ConfidentlyWrong",
    "ConfusionMatrix",
    "Faithfulness",
    "MethodComparison",
    "MethodScore",
    "OneVsRest",
    "SanityCheck",
    "binary_report",
    "compare_methods",
    "confidently_wrong",
    "confusion_matrix",
    "data_randomization_check",
    "evaluate_model",
    "faithfulness",
    "sanity_check",
]
