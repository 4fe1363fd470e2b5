"""Text notes at a step, stored as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, register

KIND = "text"


@dataclass(frozen=True)
class Text:
    """A text note at a step (a remark, a log line, a description of the run)."""

    tag: str
    text: str
    step: int = 0
    wall_time: float | None = None


@register
class TextCodec(Codec):
    kind = KIND
    record = Text
    view = "text"

    def normalise(self, record: Text) -> dict[str, Any]:
        if not isinstance(record.text, str):
            raise BadInputError(f"{record.tag!r}: Text.text must be a str, not {type(record.text).__name__}")
        return {}

    def encode(self, record: Text, files: FileSink) -> Stored:
        return Stored(int(record.step), record.wall_time, {"text": record.text})

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Text:
        return Text(tag, stored.data["text"], step=stored.step, wall_time=stored.wall_time)
