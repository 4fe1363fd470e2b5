"""The errors deepscope raises for bad input: each says what was wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeepscopeError(ValueError):
    """Base class of every error deepscope raises on purpose (a ``ValueError``)."""


class BadInputError(DeepscopeError):
    """The inputs, the model or an option cannot be used as given."""


class LayerNotFoundError(DeepscopeError, KeyError):
    """A layer name is not in ``model.named_modules()``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TargetError(BadInputError):
    """A target does not name one scalar per input (a bad class, channel or layer for this model: bad input)."""


class NotSupportedError(DeepscopeError, AttributeError):
    """A call deepscope does not offer (a TensorBoard method without a counterpart); the message says what to use.

    An ``AttributeError`` too, so that ``hasattr`` answers ``False`` for such a method."""


class StoreError(DeepscopeError):
    """A run's store cannot be used: not ours, unreadable, read-only, full, corrupted, or in use elsewhere."""


def close_names(name: str, names: Iterable[str], n: int = 5) -> list[str]:
    """The names closest to ``name``: by spelling first, then those sharing its last part."""
    names = list(names)
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    tail = name.rsplit(".", 1)[-1]
    for candidate in names:
        if len(found) >= n:
            break
        if candidate not in found and tail and candidate.endswith(tail):
            found.append(candidate)
    return found
