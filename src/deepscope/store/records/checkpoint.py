"""Checkpoints: a model's ``state_dict`` at a step, saved with ``torch.save`` as a file beside the run.

Not a record users log (``Run.checkpoint`` makes it, ``Reader.checkpoint`` reads it), but a kind of the store like
the others: one row in ``objects`` and its file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from .codec import Codec, FileSink, FileSource, Stored, register

KIND = "checkpoint"


@dataclass(frozen=True)
class CheckpointState:
    """A snapshot of a model's ``state_dict``, tensors already copied to the host."""

    tag: str
    step: int
    wall_time: float
    state: dict[str, Any]


@register
class CheckpointCodec(Codec):
    kind = KIND
    record = CheckpointState

    def encode(self, record: CheckpointState, files: FileSink) -> Stored:
        import torch  # a state dict holds tensors: torch is loaded already

        out = io.BytesIO()
        torch.save(record.state, out)
        file = files.put(".pt", out.getvalue())
        data = {"tensors": len(record.state), "bytes": sum(t.nbytes for t in record.state.values())}
        return Stored(int(record.step), record.wall_time, data, file)


def load(files: FileSource, relative: str) -> dict[str, Any]:
    """The state dict in a checkpoint's file, as CPU tensors (``torch.load`` with ``weights_only``)."""
    import torch

    return dict(torch.load(io.BytesIO(files.read(relative)), map_location="cpu", weights_only=True))
