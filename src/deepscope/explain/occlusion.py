"""Occlusion (Zeiler & Fergus 2014): how much the target's score drops when a patch of the input is hidden.

A window slides over the input; inside it every channel is replaced by the baseline (by default the per-channel
mean of the data set given as ``data``, else of the inputs; docs/occlusion.md says how to choose it), and the
drop ``score(x) - score(occluded x)`` is credited to the hidden elements. Each element's attribution is the mean
drop over the windows that cover it, as in Captum's ``Occlusion``, so the two can be compared number for number.

All windows of all inputs go through the model in batches of ``batch_size``. With ``incremental`` (the default
where the model allows it) the batches do not run the whole model: see :mod:`._incremental`, which recomputes
only the part of each layer that a patch changes, and gives the same result within float rounding.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError
from ._incremental import Boxes, Engine, Unsupported
from .base import Method, Result, defaults, register
from .gradients import input_baselines

# Keep the clean values of at most this many bytes per chunk of inputs in the incremental mode.
_CACHE_BYTES = 1 << 30
# A progress bar appears from this many batches on (and only on a terminal: tqdm's disable=None).
_PROGRESS_FROM = 8


def _shape(value: object, d: int, what: str) -> tuple[int, ...]:
    """An int or a d-tuple of ints as a d-tuple; anything else is bad input."""
    if isinstance(value, bool):
        raise BadInputError(f"{what} must be an int or a tuple of {d} ints, not a bool.")
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    if isinstance(value, tuple) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        if len(value) != d:
            raise BadInputError(
                f"{what}={value!r} has {len(value)} sizes but the inputs have {d} spatial axes; give {d} "
                f"(one per axis) or a single int."
            )
        return tuple(int(v) for v in value)
    raise BadInputError(f"{what}={value!r} is not an int or a tuple of {d} ints.")


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, Captum's way: the last window may stick out and is cut at the border."""
    steps = -(-(size - window) // stride)
    return [i * stride for i in range(steps + 1) if i * stride < size]


@register("occlusion")
class Occlusion(Method):
    """Zeiler & Fergus 2014: the drop in the target's score when a sliding patch hides part of the input.

    ``window`` is the patch (an int, an ``(h, w)`` pair, or a list of them whose maps are averaged; default: an
    eighth of each side), ``stride`` its step (default: half the window); the patch covers every channel and
    holds the ``baseline``: a number (on images with a plain background, the background's value: a patch of it
    hides what it covers and adds nothing), a tensor, or "mean", the per-channel mean of the data set passed as
    ``data`` (without ``data``: of the inputs, which for one image is that image's own mean). ``attribution``
    [N, C, *spatial] is, per element, the mean of ``score(x) - score(occluded x)`` over the windows that cover it
    (Captum's convention; a window that reaches past the border is cut there, and elements no window covers get
    0). ``heatmap`` is its channel mean.
    To measure the drop in the softmax probability of a class instead of its score (as Zeiler & Fergus did), pass
    ``target=ds.probability(target)``; ``probability=True`` is its deprecated spelling.

    ``incremental=None`` (default) recomputes only what each patch changes where the model allows it (torch.fx
    traceable, no hooks, eval mode, a target on the model's output), else runs whole forward passes; ``True`` asks
    for it (a warning says why when it cannot be had), ``False`` always runs whole passes. Both give the same
    numbers within float rounding.

    ``tau`` below 1 is Krypton's projective field thresholding, an **approximation** that trades accuracy for
    speed in the incremental mode: each layer recomputes at most a ``tau`` fraction of its map's side around the
    centre of the patch's cone, and the values beyond it keep their clean values although the patch changed them
    (docs/occlusion.md gives the error measured against the exact map). ``tau=1`` (default) is exact.

    With several inputs the window slides over each input in turn (a feature vector ``[N, F]`` as a one-channel
    signal), in whole passes; ``window``, ``stride`` and ``baseline`` may then be tuples with one entry per input.
    """

    options = defaults(
        window=None,
        stride=None,
        baseline="mean",
        data=None,
        batch_size=64,
        probability=False,
        incremental=None,
        tau=1.0,
    )
    needs_spatial = True
    needs_module = False

    def attribute(self) -> Result:
        x = self.inputs
        parts = [self._part(x, j) for j in range(len(self.layout))]
        window_options = self.layout.each(self.opts["window"], "window")
        stride_options = self.layout.each(self.opts["stride"], "stride")
        geometry = [
            self._geometry(tuple(part.shape[2:]), window, stride)
            for part, window, stride in zip(parts, window_options, stride_options)
        ]
        batch_size = self.opts["batch_size"]
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise BadInputError(f"batch_size={batch_size!r} must be a positive int.")
        incremental = self.opts["incremental"]
        if incremental not in (None, True, False):
            raise BadInputError(f"incremental={incremental!r} must be None (automatic), True or False.")
        probability = self.opts["probability"]
        if not isinstance(probability, bool):
            raise BadInputError(f"probability={probability!r} must be True or False.")
        if probability:  # the old spelling of a probability target
            warnings.warn(
                "occlusion's probability=True is deprecated: pass the target as a probability instead, "
                "target=ds.probability(target) (e.g. ds.probability(None) for the predicted class); the "
                "explanation's scores are then the clean probabilities.",
                DeprecationWarning,
                stacklevel=3,
            )
            self.target.measure_probability()
        tau = self.opts["tau"]
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating, np.integer)) or not 0 < tau <= 1:
            raise BadInputError(
                f"tau={tau!r} must be a number in (0, 1]: the share of each map's side an occluding patch's cone "
                f"may grow to (1: exact; Krypton's projective field threshold, about 0.5 for a fast approximation)."
            )
        if tau < 1 and incremental is False:
            raise BadInputError(
                f"tau={tau!r} prunes the incremental mode, but incremental=False runs whole passes; leave "
                f"incremental at None (or True), or set tau=1."
            )
        self.tau = float(tau)
        baseline = input_baselines(self.opts["baseline"], x, self.layout, self.opts["data"])

        with torch.no_grad():
            self.scores, output = self.forward(x)
            self.scores = self.scores.detach()
            reference = self.scores

        engine = self._engine(output) if incremental is not False else None
        batches = 0
        for part, (windows, strides) in zip(parts, geometry):
            for window, stride in zip(windows, strides):
                count = math.prod(len(axis) for axis in self._axes(tuple(part.shape[2:]), window, stride))
                for images in self._chunks(engine, count, int(batch_size)):
                    batches += math.ceil(len(images) * count / batch_size)
        attributions = []
        disable = True if batches < _PROGRESS_FROM else None  # None: shown on a terminal only
        with tqdm(total=batches, desc="occlusion", unit="batch", disable=disable, leave=False) as progress:
            for j, (part, (windows, strides)) in enumerate(zip(parts, geometry)):
                total = torch.zeros_like(part, dtype=torch.float32)
                for window, stride in zip(windows, strides):
                    total += self._one_size(j, window, stride, baseline, reference, engine, int(batch_size), progress)
                attributions.append((total / len(windows)).to(x.dtype))
        if not self.layout.packed:
            return Result(attribution=attributions[0], heatmap=attributions[0].mean(dim=1))
        maps = tuple(a.mean(dim=1) if self.layout.spatial(j) else None for j, a in enumerate(attributions))
        return Result(attribution=self.layout.pack(attributions), heatmap=maps)

    def _part(self, batch: Tensor, j: int) -> Tensor:
        """Input ``j``'s rows of ``batch`` as ``[R, C, *spatial]`` (a feature vector as a one-channel signal): a
        view, so writing a patch into it writes into ``batch``."""
        part = self.layout.parts(batch)[j]
        return part if part.ndim > 2 else part.unsqueeze(1)

    # Options ----------------------------------------------------------------------------------------------------

    def _geometry(
        self, spatial: tuple[int, ...], option: object, stride_option: object
    ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """The window sizes and their strides (options ``window``, ``stride`` for one input), checked against the
        input's spatial size."""
        d = len(spatial)
        if option is None:
            sizes = [tuple(max(1, s // 8) for s in spatial)]
        elif isinstance(option, list):
            if not option:
                raise BadInputError("window=[] names no window size; give at least one.")
            sizes = [_shape(w, d, "window") for w in option]
        else:
            sizes = [_shape(option, d, "window")]
        strides = []
        for size in sizes:
            if min(size) < 1:
                raise BadInputError(f"window={size} must be at least 1 along every axis.")
            if any(w > s for w, s in zip(size, spatial)):
                raise BadInputError(
                    f"window {size} is larger than the inputs' spatial size {spatial}; use a window at most that big."
                )
            if stride_option is None:
                strides.append(tuple(max(1, w // 2) for w in size))
            else:
                stride = _shape(stride_option, d, "stride")
                if min(stride) < 1:
                    raise BadInputError(f"stride={stride_option!r} must be positive along every axis.")
                strides.append(stride)
        return sizes, strides

    @staticmethod
    def _axes(spatial: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> list[list[int]]:
        return [_starts(s, w, st) for s, w, st in zip(spatial, window, stride)]

    # The sliding window ---------------------------------------------------------------------------------------

    def _one_size(
        self,
        j: int,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        baseline: Tensor,
        reference: Tensor,
        engine: Engine | None,
        batch_size: int,
        progress: tqdm,
    ) -> Tensor:
        """The attribution of input ``j`` for one window size: the mean score drop over the windows covering each
        element."""
        x = self._part(self.inputs, j)
        spatial = tuple(x.shape[2:])
        starts = np.array(list(itertools.product(*self._axes(spatial, window, stride))), dtype=np.int64)
        lo = starts
        hi = np.minimum(starts + np.array(window), np.array(spatial))
        total = torch.zeros_like(x, dtype=torch.float32)
        count = torch.zeros(spatial, dtype=torch.float32, device=x.device)
        for low, high in zip(lo, hi):
            count[tuple(slice(a, b) for a, b in zip(low, high))] += 1
        with torch.no_grad():
            for rows, windows, drops in self._drops(j, lo, hi, baseline, reference, engine, batch_size, progress):
                for row, w, drop in zip(rows.tolist(), windows.tolist(), drops.tolist()):
                    region = tuple(slice(int(a), int(b)) for a, b in zip(lo[w], hi[w]))
                    total[(row, slice(None), *region)] += drop
        return total / count.clamp(min=1)

    def _drops(
        self,
        j: int,
        lo: np.ndarray,
        hi: np.ndarray,
        baseline: Tensor,
        reference: Tensor,
        engine: Engine | None,
        batch_size: int,
        progress: tqdm,
    ) -> Iterator[tuple[Tensor, np.ndarray, Tensor]]:
        """Batches of (input index, window index, score drop) for windows over model input ``j``, by whole passes
        or incrementally."""
        x = self.inputs
        n, count = x.shape[0], lo.shape[0]
        if engine is None:
            background = self._part(baseline, j)
            pairs = np.array(list(itertools.product(range(n), range(count))), dtype=np.int64)
            for first in range(0, len(pairs), batch_size):
                part = pairs[first : first + batch_size]
                rows = torch.as_tensor(part[:, 0], device=x.device)
                batch = x[rows].clone()
                occluded = self._part(batch, j)  # a view: patches written here land in the batch
                for b, (row, w) in enumerate(part):
                    region: tuple[Any, ...] = tuple(slice(int(a), int(c)) for a, c in zip(lo[w], hi[w]))
                    occluded[(b, slice(None), *region)] = background[(row, slice(None), *region)]
                yield rows, part[:, 1], reference[rows] - self.forward(batch, of=rows)[0]
                progress.update(1)
            return
        for chunk in self._chunks(engine, count, batch_size):
            first = chunk.start
            images = x[chunk]
            engine.load(images)
            local = np.repeat(np.arange(images.shape[0]), count)
            w_index = np.tile(np.arange(count), images.shape[0])
            boxes = engine.boxes(lo[w_index], hi[w_index], self.tau)
            order = engine.order(boxes)
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                rows = torch.as_tensor(local[pick], device=x.device)
                chosen: Boxes = {k: (v[0][pick], v[1][pick]) for k, v in boxes.items()}
                output = engine.run(rows, chosen, baseline[chunk])
                scores = self.target.scores(output, of=rows + first)
                yield rows + first, w_index[pick], reference[rows + first] - scores
                progress.update(1)

    def _chunks(self, engine: Engine | None, count: int, batch_size: int) -> list[range]:
        """The inputs run together: all of them in plain passes; incrementally, enough to fill a batch with their
        ``count`` windows each, as long as their cached clean values stay within ``_CACHE_BYTES``."""
        n = self.inputs.shape[0]
        if engine is None:
            return [range(n)]
        size = max(1, min(n, _CACHE_BYTES // max(1, engine.bytes_per_input), -(-batch_size // count)))
        return [range(first, min(n, first + size)) for first in range(0, n, size)]

    def _engine(self, output: Tensor) -> Engine | None:
        """The incremental engine, or None (with a warning when ``incremental=True`` asked for it) for plain passes."""
        reason = None
        if isinstance(self.model, probe.FunctionModel):
            reason = "the model is a function, which torch.fx does not trace into"
        elif self.target.layers:
            reason = "the target reads a layer inside the model"
        elif self.opts["output"] is not None:
            reason = "output= reads the scores from the model's output in its own way"
        elif self.layout.packed:
            reason = "the model takes several inputs"
        elif self.opts["forward_args"] or self.opts["forward_kwargs"]:
            reason = "the model takes extra forward arguments, which the traced graph does not follow"
        else:
            try:
                engine = Engine(self.model, self.inputs[:1])
                clean, expected = engine.sample_output, output[:1]
                tolerance = 1e-5 * float(expected.abs().max()) + 1e-6
                if clean.shape != expected.shape or not torch.allclose(clean, expected, rtol=1e-4, atol=tolerance):
                    reason = "the traced graph does not reproduce the model's output"
            except Unsupported as why:
                reason = str(why)
        if reason is None:
            return engine
        if self.tau < 1:
            warnings.warn(
                f"occlusion runs whole forward passes, so tau={self.tau:g} prunes nothing and the map is exact: "
                f"{reason}.",
                stacklevel=4,
            )
        elif self.opts["incremental"]:
            warnings.warn(f"occlusion runs whole forward passes instead of incremental ones: {reason}.", stacklevel=4)
        return None
