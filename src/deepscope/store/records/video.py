"""Clips: frames at a step, kept as looping animated GIFs beside the run (as TensorBoard does)."""

from __future__ import annotations

import io
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, pixels, register, unreadable

KIND = "video"


@dataclass(frozen=True)
class Video:
    """A clip at a step: ``frames`` uint8 ``[T, H, W]`` or ``[T, H, W, 3]`` (or floats in [0, 1]), ``fps`` a second.

    The store keeps it as an animated GIF beside the run's database (as TensorBoard does); reading it back gives
    uint8 RGB frames. GIF keeps 256 colours per frame, so colourful frames come back approximately.
    """

    tag: str
    step: int
    frames: np.ndarray
    fps: float = 4.0
    wall_time: float | None = None


@register
class VideoCodec(Codec):
    kind = KIND
    record = Video
    has_files = True
    view = "images"

    def normalise(self, record: Video) -> dict[str, Any]:
        frames = array(record.frames)
        if frames.ndim not in (3, 4) or frames.shape[0] == 0 or (frames.ndim == 4 and frames.shape[3] not in (1, 3)):
            raise BadInputError(
                f"{record.tag!r}: video frames are [T, H, W] or [T, H, W, 3] (channels last), not {frames.shape}"
            )
        fps = record.fps
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps <= 100:
            raise BadInputError(f"{record.tag!r}: fps is a number of frames a second in (0, 100], not {fps!r}")
        return {"frames": np.stack([pixels(record.tag, frame) for frame in frames]), "fps": float(fps)}

    def encode(self, record: Video, files: FileSink) -> Stored:
        from PIL import Image as PILImage

        frames = [PILImage.fromarray(frame).convert("RGB") for frame in record.frames]
        duration = max(20, round(1000 / record.fps / 10) * 10)  # GIF counts hundredths; browsers draw < 20 ms slowly
        out = io.BytesIO()
        frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0)
        file = files.put(".gif", out.getvalue())
        data = {"fps": record.fps, "frames": len(frames), "shape": list(record.frames.shape[1:3])}
        return Stored(int(record.step), record.wall_time, data, file)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Video:
        from PIL import Image as PILImage
        from PIL import ImageSequence

        assert stored.file is not None
        try:
            with PILImage.open(io.BytesIO(files.read(stored.file))) as clip:
                frames = np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(clip)])
        except OSError as e:
            raise unreadable(files, stored.file, "a video", tag, stored.step, e) from e
        return Video(tag, stored.step, frames, fps=stored.data["fps"], wall_time=stored.wall_time)
