"""Training-framework integrations: each logs into a :class:`deepscope.Run`; none is imported with deepscope.

* :class:`deepscope.track.integrations.lightning.DeepscopeLogger`: a PyTorch Lightning logger
  (``pip install lightning``).
* :class:`deepscope.track.integrations.keras.DeepscopeCallback`: a Keras 3 callback, Keras on its torch backend
  (``pip install keras``).

Both names can be imported from here; the framework is imported on first use, and a missing one is an
``ImportError`` that names the ``pip install`` to run.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"DeepscopeLogger": ".lightning", "DeepscopeCallback": ".keras"}

__all__ = ["DeepscopeCallback", "DeepscopeLogger"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing this package never imports Lightning or Keras.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
