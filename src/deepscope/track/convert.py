"""Records from what users log: the result objects of the rest of deepscope (what ``Run.log_confusion_matrix``,
``log_pr_curve``, ``log_explanations``, ``log_sanity_check``, ``log_faithfulness`` and ``log_method_comparison``
store) and pictures (matplotlib figures, PIL images, image tensors and arrays).

:func:`records` is the one place that decides which record kind a value of ``run.log({tag: value})`` becomes;
numbers never reach it (``run.log`` keeps them on its fast path). Each record kind's module in
:mod:`deepscope.store.records` registers the types it is made from (:data:`LOGGABLE` lists them all) and the
functions that make it, named here too; they read the results' public attributes and return plain records,
checked before any picture is drawn.
"""

from __future__ import annotations

from ..errors import BadInputError
from ..store.records import Loggable, Record, loggables
from ..store.records.comparison import comparison_table
from ..store.records.confusion import confusion
from ..store.records.explanation import explanation_set
from ..store.records.faithfulness import faithfulness_curves
from ..store.records.image import array_image, figure_image, pil_image
from ..store.records.pr_curve import pr_curves
from ..store.records.sanity import sanity_curves

__all__ = [
    "LOGGABLE",
    "Loggable",
    "array_image",
    "comparison_table",
    "confusion",
    "explanation_set",
    "faithfulness_curves",
    "figure_image",
    "pil_image",
    "pr_curves",
    "records",
    "sanity_curves",
]

LOGGABLE: tuple[Loggable, ...] = loggables()


def records(tag: str, value: object, step: int = 0) -> list[Record]:
    """The records ``run.log({tag: value}, step=step)`` stores for a value that is not a number (:data:`LOGGABLE`).

    Raises:
        BadInputError: a value of another type (the message lists what ``run.log`` takes), or one of these types
            that cannot be stored (an image of the wrong shape, explanations of inputs that are not images).
    """
    for loggable in LOGGABLE:
        if loggable.accepts(value):
            return loggable.records(value, tag, step)
    kinds = "; ".join(loggable.description for loggable in LOGGABLE)
    raise BadInputError(
        f"{tag!r}: cannot log a {type(value).__name__} ({value!r:.60}). run.log takes numbers (Python or NumPy "
        f"numbers, one-element tensors); {kinds}. Text goes to run.note"
    )
