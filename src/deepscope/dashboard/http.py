"""What the server's routes share (needs the ``board`` extra: imported by the server and the views' ``routes.py``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import JSONResponse

from ..store.reader import STEP_RANGE

# A step (or step bound) or an index from a query: a 64-bit integer, else 422 before any route runs (SQLite and
# PostgreSQL hold nothing larger; a bigger number would overflow on the way to them).
Step = Annotated[int | None, Query(ge=STEP_RANGE[0], le=STEP_RANGE[1])]
Index = Annotated[int, Query(ge=STEP_RANGE[0], le=STEP_RANGE[1])]


class JSONAnswer(JSONResponse):
    """Compact JSON; the API already turned non-finite floats into strings, so NaN here is a bug."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
