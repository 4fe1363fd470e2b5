"""Several inputs: a model called with a tuple of batches that share the batch axis (image and metadata, two
images, ...), seen by the methods as one batch.

A method works on one tensor of N rows. A tuple of inputs is *packed* into one ``[N, F]`` tensor (each input
flattened after its batch axis, the inputs side by side) and unpacked into views of it for every forward pass. So
the gradient methods, which are element-wise in their inputs, run unchanged, and their attribution unpacks into one
per input; what needs an input's own shape (occlusion's windows, LIME's segments, SmoothGrad's noise scale,
baselines, heatmaps) reads it here. A single tensor is not packed: its layout is the identity, so one input is
explained exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import BadInputError


@dataclass(frozen=True)
class Layout:
    """Where each input sits in the batch tensor a method works on.

    ``shapes`` are the inputs' shapes after the batch axis; ``packed`` is False for a single tensor (used as it
    is) and True for a tuple of inputs (even a tuple of one), which are flattened side by side.
    """

    shapes: tuple[tuple[int, ...], ...]
    packed: bool

    @classmethod
    def of(cls, inputs: Tensor | Sequence[Tensor]) -> Layout:
        if isinstance(inputs, Tensor):
            return cls((tuple(inputs.shape[1:]),), packed=False)
        return cls(tuple(tuple(x.shape[1:]) for x in inputs), packed=True)

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def sizes(self) -> list[int]:
        """How many values of a row each input holds."""
        return [math.prod(shape) for shape in self.shapes]

    def spatial(self, j: int) -> bool:
        """Whether input ``j`` has spatial axes (``[N, C, *spatial]``), rather than being a feature vector."""
        return len(self.shapes[j]) >= 2

    @property
    def first_spatial(self) -> int | None:
        """The first input with spatial axes (where a layer method's heatmap goes), or None."""
        return next((j for j in range(len(self)) if self.spatial(j)), None)

    def pack(self, inputs: Sequence[Tensor]) -> Tensor:
        """The inputs (each ``[R, *shape]``) as one batch tensor."""
        if not self.packed:
            return inputs[0]
        return torch.cat([x.reshape(x.shape[0], -1) for x in inputs], dim=1)

    def parts(self, batch: Tensor) -> tuple[Tensor, ...]:
        """Each input's rows of ``batch`` (``[R, *shape]``), as views: writing into one writes into ``batch``."""
        if not self.packed:
            return (batch,)
        pieces = torch.split(batch, self.sizes, dim=1)
        return tuple(piece.reshape(batch.shape[0], *shape) for piece, shape in zip(pieces, self.shapes, strict=True))

    def unpack(self, batch: Tensor) -> Tensor | tuple[Tensor, ...]:
        """What the model is called with for ``batch``: the tensor itself, or the tuple of inputs."""
        return self.parts(batch) if self.packed else batch

    def each(self, option: object, name: str) -> tuple[object, ...]:
        """An option given per input: a tuple with one entry per input, or one value for all of them."""
        if not self.packed:
            return (option,)
        if isinstance(option, tuple):
            if len(option) != len(self):
                raise BadInputError(
                    f"{name} is a tuple of {len(option)} entries but there are {len(self)} inputs; give one entry "
                    f"per input, or one value for all of them."
                )
            return option
        return (option,) * len(self)

    def map(self, fn: Callable[[int, Tensor], Tensor], batch: Tensor) -> Tensor:
        """``fn(j, part_j)`` for each input's part of ``batch`` (each result shaped like the part), packed again."""
        return self.pack([fn(j, part) for j, part in enumerate(self.parts(batch))])


def check_tuple(inputs: object) -> tuple[Tensor, ...] | None:
    """The inputs as a tuple when several were given, None for a single tensor; a clear error for a list or an
    empty tuple, or a tuple whose inputs disagree on the batch size."""
    if isinstance(inputs, list) and inputs and all(isinstance(x, Tensor) for x in inputs):
        raise BadInputError("inputs is a list; give several inputs as a tuple of tensors: tuple(inputs).")
    if not isinstance(inputs, tuple):
        return None
    if not inputs:
        raise BadInputError("inputs is an empty tuple; give one tensor, or a tuple of one tensor per model input.")
    return inputs


def check_batch_sizes(inputs: Sequence[Tensor]) -> None:
    sizes = [x.shape[0] for x in inputs]
    if len(set(sizes)) > 1:
        shapes = ", ".join(f"inputs[{j}] {tuple(x.shape)}" for j, x in enumerate(inputs))
        raise BadInputError(
            f"the inputs have different batch sizes ({shapes}); several inputs share the batch axis: give each "
            "the same number N of rows, one per example."
        )
