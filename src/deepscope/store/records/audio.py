"""Sounds: samples at a step, kept as 16-bit PCM WAV files beside the run (the board plays them)."""

from __future__ import annotations

import io
import numbers
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, register, unreadable

KIND = "audio"


@dataclass(frozen=True)
class Audio:
    """A sound at a step: ``samples`` float ``[T]`` (mono) or ``[T, C]`` in [-1, 1] at ``sample_rate`` Hz.

    The store keeps it as a 16-bit PCM WAV file beside the run's database; reading it back gives float32 samples
    (the 16-bit levels divided by 32767).
    """

    tag: str
    step: int
    samples: np.ndarray
    sample_rate: int = 44100
    wall_time: float | None = None


@register
class AudioCodec(Codec):
    kind = KIND
    record = Audio
    has_files = True
    view = "images"

    def normalise(self, record: Audio) -> dict[str, Any]:
        samples = array(record.samples)
        if samples.ndim not in (1, 2) or samples.dtype.kind not in "iuf" or samples.shape[0] == 0:
            raise BadInputError(
                f"{record.tag!r}: audio samples are a numeric [T] or [T, channels] array, not {samples.shape}"
            )
        if not np.isfinite(samples).all() or np.abs(samples).max() > 1:
            raise BadInputError(f"{record.tag!r}: audio samples must lie in [-1, 1]; scale them (or clip them)")
        rate = record.sample_rate
        whole = isinstance(rate, numbers.Real) and not isinstance(rate, bool) and float(rate).is_integer()
        if not whole or not 1 <= rate <= 4_294_967_295:  # WAV keeps the rate in 32 bits
            raise BadInputError(f"{record.tag!r}: sample_rate is a whole number of samples a second, not {rate!r}")
        return {"samples": np.ascontiguousarray(samples, dtype=np.float32), "sample_rate": int(rate)}

    def encode(self, record: Audio, files: FileSink) -> Stored:
        samples = record.samples if record.samples.ndim == 2 else record.samples[:, np.newaxis]
        levels = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
        out = io.BytesIO()
        with wave.open(out, "wb") as handle:
            handle.setnchannels(samples.shape[1])
            handle.setsampwidth(2)
            handle.setframerate(record.sample_rate)
            handle.writeframes(levels.tobytes())
        file = files.put(".wav", out.getvalue())
        data = {"sample_rate": record.sample_rate, "channels": samples.shape[1], "frames": samples.shape[0]}
        return Stored(int(record.step), record.wall_time, data, file)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Audio:
        assert stored.file is not None
        try:
            with wave.open(io.BytesIO(files.read(stored.file)), "rb") as handle:
                channels, rate = handle.getnchannels(), handle.getframerate()
                levels = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
        except (OSError, EOFError, wave.Error) as e:
            raise unreadable(files, stored.file, "a sound", tag, stored.step, e) from e
        samples = (levels.astype(np.float32) / 32767).reshape(-1, channels)
        return Audio(tag, stored.step, samples, sample_rate=rate, wall_time=stored.wall_time)
