"""The Images view's answer (:mod:`deepscope.dashboard.models` says how models document the routes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...models import Answer, Unreadable


class Picture(Answer):
    """A picture (PNG) at a step: its address (``api/file?...``), size and caption."""

    step: int
    url: str
    width: int
    height: int
    caption: str


class Clip(Picture):
    """An animated GIF at a step."""

    frames: int
    fps: float


class Sound(Answer):
    """A WAV file at a step."""

    step: int
    url: str
    sample_rate: int
    channels: int
    seconds: float


class Images(Answer):
    """``/api/images``: the pictures, clips or sounds of a tag (``kind`` says which), in the order logged."""

    run: str
    tag: str
    kind: Literal["image", "video", "audio"]
    points: list[Clip | Picture | Sound] = Field(description="Picture for image, Clip for video, Sound for audio")
    unreadable: list[Unreadable]
