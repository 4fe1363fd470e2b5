"""What the Images view answers: the pictures, sounds or clips of a tag, with the address of each file."""

from __future__ import annotations

from typing import Any

from ....store.records.audio import KIND as AUDIO
from ....store.records.image import KIND as IMAGE
from ....store.records.video import KIND as VIDEO
from ...common import Served, check_kind, file_url, open_reader
from .. import kinds_of

# Tag kinds the Images tab shows: pictures, and beside them sounds (WAV) and clips (animated GIF).
MEDIA = kinds_of("images")


def images(root: Served, run: str, tag: str) -> dict[str, Any]:
    """The pictures, sounds or clips of a tag, in the order logged, with the URL of each file (:func:`file_path`).

    ``kind`` says which: ``"image"`` (a PNG; points ``{"step", "url", "width", "height", "caption"}``),
    ``"video"`` (an animated GIF; also ``"frames"``, ``"fps"``) or ``"audio"`` (a WAV file; points ``{"step",
    "url", "sample_rate", "channels", "seconds"}``).
    """
    with open_reader(root, run) as reader:
        kind = reader.tags().get(tag)
        if kind not in MEDIA:
            check_kind(reader, run, tag, IMAGE)
        rows = reader.files(tag)
    points = []
    for step, file, meta in rows:
        point: dict[str, Any] = {"step": step, "url": file_url(run, file)}
        if kind == AUDIO:
            rate = meta["sample_rate"]
            point |= {"sample_rate": rate, "channels": meta["channels"], "seconds": meta["frames"] / rate}
        else:
            height, width = (meta.get("shape") or [0, 0])[:2]
            point |= {"width": width, "height": height, "caption": meta.get("caption", "")}
            if kind == VIDEO:
                point |= {"frames": meta["frames"], "fps": meta["fps"]}
        points.append(point)
    return {"run": run, "tag": tag, "kind": kind, "points": points}
