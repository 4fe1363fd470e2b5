"""What the server's routes share (needs the ``board`` extra: imported by the server and the views' ``routes.py``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class JSONAnswer(JSONResponse):
    """Compact JSON; the API already turned non-finite floats into strings, so NaN here is a bug."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
