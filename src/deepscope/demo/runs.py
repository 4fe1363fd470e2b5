"""Where the demos keep their training runs: a demo's run is replaced each time the demo runs again."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..store import schema


def fresh_run_dir(path: Path) -> Path:
    """``path``, emptied if it holds a deepscope run from an earlier demo; anything else there is left alone.

    A directory without a run database is not ours to delete; :class:`deepscope.Run` then refuses it with a clear
    error instead.
    """
    if path.is_dir() and schema.db_path(path).exists():
        shutil.rmtree(path)
    return path
