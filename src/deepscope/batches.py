"""What "a data set" may be, in one place: every function that streams data through a model (``embed``,
``evaluate_model``, ``confidently_wrong``, ``dead_units``, ``top_patches``) accepts the same forms.

* a tensor ``[N, ...]`` of inputs (no labels), split into batches of ``batch_size``;
* a pair ``(inputs, labels)`` of tensors with the same first dimension, split together;
* a DataLoader, or any iterable, yielding input tensors or ``(inputs, labels, ...)`` tuples (extra fields ignored).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import BadInputError

FORMS = (
    "a tensor [N, ...], an (inputs, labels) pair of tensors, or a DataLoader / iterable yielding input tensors "
    "or (inputs, labels, ...) batches"
)


@dataclass
class Batches:
    """A data set as ``(inputs, labels or None)`` batches; ``count`` is the number of batches when known."""

    source: Iterable[object]
    count: int | None
    what: str = "data"

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        for batch in self.source:
            yield split(batch, self.what)

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("the number of batches is not known")
        return self.count


def batches(data: object, batch_size: int = 256, what: str = "data") -> Batches:
    """``data`` in any of the forms this module lists, as ``(inputs, labels or None)`` batches.

    Raises :class:`~deepscope.errors.BadInputError` at once for a form it does not know, an empty tensor, or a
    pair whose lengths differ; a bad batch inside an iterable is reported when it is reached.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size={batch_size!r} must be a positive int.")
    if isinstance(data, Tensor):
        if data.ndim < 1 or data.shape[0] == 0:
            raise BadInputError(f"{what} has shape {tuple(data.shape)}; pass a batch [N, ...] with N >= 1.")
        return Batches(data.split(batch_size), -(-data.shape[0] // batch_size), what)
    if _is_pair(data):
        inputs, labels = data  # type: ignore[misc]
        if len(inputs) != len(labels):
            raise BadInputError(f"{what}: {len(inputs)} inputs but {len(labels)} labels; give one label per input.")
        if len(inputs) == 0:
            raise BadInputError(f"{what} is empty; pass at least one input.")
        starts = range(0, len(inputs), batch_size)
        pairs = [(inputs[i : i + batch_size], labels[i : i + batch_size]) for i in starts]
        return Batches(pairs, len(pairs), what)
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise BadInputError(f"{what} is a {type(data).__name__}; pass {FORMS}.")
    return Batches(data, len(data) if isinstance(data, Sized) else None, what)


def split(batch: object, what: str = "data") -> tuple[Tensor, Tensor | None]:
    """One batch as ``(inputs, labels or None)``; labels flattened to int64 on the CPU."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        if len(batch) == 1:
            return batch[0], None
        labels = torch.as_tensor(batch[1]).reshape(-1).long().cpu()
        if len(labels) != len(batch[0]):
            raise BadInputError(
                f"a batch of {what} has {len(batch[0])} inputs but {len(labels)} labels; yield one label per input."
            )
        return batch[0], labels
    raise BadInputError(f"a batch of {what} is a {type(batch).__name__}; the {what} must yield tensors or tuples.")


def _is_pair(data: object) -> bool:
    """An ``(inputs, labels)`` pair, told from an iterable of two input batches by the labels' shape: one value
    per input (``[N]``, or a scalar per row)."""
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        return False
    inputs, labels = data
    return labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1 and inputs.ndim > 1)
