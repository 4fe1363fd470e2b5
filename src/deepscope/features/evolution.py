"""How a layer's features evolve over training (seed 002: "earlier layers train earlier").

:func:`evolution` loads each checkpoint a :class:`~deepscope.Run` kept (``run.checkpoint(model)``) into a fresh
model, and computes the layer's filters, and optionally activation maximisations of a few of its channels, at each
one. The result shows the checkpoints side by side, and logs into the run as images tagged
``features/<layer>/filters`` and ``features/<layer>/maximize`` at each checkpoint's step, the tag convention of the
board's Features tab (whose step slider then walks through training).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from .. import probe
from ..errors import BadInputError
from ..render import FigureDisplay, NotebookFigure, new_figure
from ..track.records import Image, Scalar
from .filters import Filters, filters
from .maximize import Maximization, _display, maximize
from .objectives import channel

if TYPE_CHECKING:
    from ..store import Reader
    from ..track.run import Run

WHAT = ("filters", "maximize")
FEATURES_PREFIX = "features"


def features_tag(layer: str, what: str) -> str:
    """The tag under which the board's Features tab looks for ``what`` of ``layer``: ``features/<layer>/<what>``
    (``what``: ``filters``, ``maximize``, ``top_patches``, ...; a filters tag's ``/noise`` scalar goes beside it).

    Records made per unit land under it too: ``top_patches.to_records(features_tag("layer3", "top_patches"))``
    gives ``features/layer3/top_patches/<unit>``, one card each on the board."""
    return f"{FEATURES_PREFIX}/{layer}/{what}"


@dataclass
class Evolution(FigureDisplay):
    """A layer's features at several checkpoints.

    Attributes:
        layer: the layer's name.
        steps: the checkpoints' steps, in increasing order.
        filters: one :class:`Filters` per step (empty if not asked for).
        maximizations: one :class:`Maximization` per step, the same channels each time (empty if not asked for).
    """

    layer: str
    steps: list[int]
    filters: list[Filters] = field(default_factory=list)
    maximizations: list[Maximization] = field(default_factory=list)

    def figure(self, max_filters: int = 16) -> NotebookFigure:
        """The checkpoints side by side, one column per step: the filters on top (with their mean noise score),
        the maximisations of the chosen channels below."""

        rows = [name for name, items in (("filters", self.filters), ("maximize", self.maximizations)) if items]
        columns = len(self.steps)
        figure = new_figure(2.4 * columns + 0.6, 2.6 * len(rows))
        axes = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
        for c, step in enumerate(self.steps):
            for r, name in enumerate(rows):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if name == "filters":
                    f = self.filters[c]
                    ax.imshow(f.grid(max_filters=max_filters), interpolation="nearest")
                    ax.set_title(f"step {step}\nnoise {float(f.noise.mean()):.2f}", fontsize=9)
                else:
                    ax.imshow(_strip(self.maximizations[c]), interpolation="nearest")
                    if len(rows) == 1:
                        ax.set_title(f"step {step}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(name, fontsize=9)
        figure.suptitle(f"layer {self.layer} over training", fontsize=10)
        return figure

    def to_records(self) -> list[Image | Scalar]:
        """Images (and the filters' mean noise as a scalar) for ``Run.log_records``, one per checkpoint at its
        step, tagged ``features/<layer>/filters`` (and ``.../filters/noise``) and ``features/<layer>/maximize``."""
        records: list[Image | Scalar] = []
        for i, step in enumerate(self.steps):
            if self.filters:
                f = self.filters[i]
                tag = features_tag(self.layer, "filters")
                records.append(Image(tag, step, f.grid(), caption=f.caption))
                records.append(Scalar(f"{tag}/noise", float(f.noise.mean()), step=step))
            if self.maximizations:
                m = self.maximizations[i]
                caption = ", ".join(f"{label}: {float(s):.3g}" for label, s in zip(m.labels, m.scores))
                records.append(Image(features_tag(self.layer, "maximize"), step, _strip(m), caption=caption))
        return records

    def log(self, run: Run) -> None:
        """Log :meth:`to_records` into ``run``: the board's Features tab then shows them with a step slider."""
        run.log_records(self.to_records())


def evolution(
    run: Run | Reader | str | os.PathLike[str],
    model_factory: Callable[[], nn.Module],
    layer: str,
    steps: Sequence[int] | None = None,
    what: Sequence[str] = WHAT,
    *,
    units: Sequence[int] = (0, 1, 2, 3),
    maximize_steps: int = 64,
    size: int = 64,
    tag: str = "checkpoint",
    progress: bool | None = None,
    **maximize_options: Any,
) -> Evolution:
    """``layer``'s filters (and activation maximisations of a few channels) at each checkpoint of a run.

    Args:
        run: a :class:`~deepscope.Run` (what it logged so far is flushed first), a :class:`~deepscope.store.Reader`,
            or a run directory, holding checkpoints kept with ``run.checkpoint(model)``.
        model_factory: makes a fresh model of the architecture checkpointed, e.g. ``lambda: Net()``; each
            checkpoint is loaded into one with ``load_state_dict`` (strict).
        layer: the layer to follow, a name from ``model.named_modules()`` (for filters: a convolution or Linear).
        steps: the checkpoints to use (default: all of them).
        what: ``"filters"`` and/or ``"maximize"``.
        units: the channels maximised at each checkpoint (one batch each).
        maximize_steps, size: gradient ascent steps and image size of each maximisation (few and small: one
            runs per checkpoint).
        tag: the tag the checkpoints were kept under.
        progress: show a tqdm bar over the checkpoints; ``None`` shows it on a terminal only.
        **maximize_options: passed on to :func:`~deepscope.features.maximize` (``preset``, ``preprocess``, ...).

    Returns:
        An :class:`Evolution` with ``filters`` and ``maximizations`` per step, ``figure()`` (checkpoints side by
        side) and ``log(run)`` (images at each checkpoint's step, for the board's Features tab).
    """
    from ..store import Reader
    from ..track.run import Run

    what = (what,) if isinstance(what, str) else tuple(what)
    if not what or any(w not in WHAT for w in what):
        raise BadInputError(f"what={what!r}; choose among {WHAT}")
    if not callable(model_factory):
        raise BadInputError(f"model_factory must be a callable that returns a fresh model, not {model_factory!r}")
    if "maximize" in what and (not units or any(isinstance(u, bool) or not isinstance(u, int) for u in units)):
        raise BadInputError(f"units={units!r}; give the channel numbers to maximise, e.g. units=(0, 1, 2, 3)")
    own_reader = not isinstance(run, Reader)
    if isinstance(run, Run):
        run.flush()
        reader = Reader(run.path)
    elif isinstance(run, Reader):
        reader = run
    else:
        reader = Reader(run)
    try:
        kept = reader.checkpoints(tag)
        if not kept:
            raise BadInputError(
                f"{reader.path} holds no checkpoints under {tag!r}; call run.checkpoint(model) while training"
            )
        chosen = sorted(set(kept if steps is None else steps))
        missing = [s for s in chosen if s not in kept]
        if missing:
            raise BadInputError(f"no checkpoint at steps {missing}; {reader.path} has checkpoints at {kept}")
        model = _fresh(model_factory)
        probe.named_layer(model, layer)  # a wrong name fails here, listing close ones, before any loading
        result = Evolution(layer=layer, steps=chosen)
        disable = None if progress is None else not progress
        for step in tqdm(chosen, desc=f"evolution of {layer}", unit="checkpoint", disable=disable, leave=False):
            model = _fresh(model_factory)
            try:
                model.load_state_dict(reader.checkpoint(step, tag))
            except RuntimeError as e:
                raise BadInputError(
                    f"the checkpoint at step {step} does not fit the model that model_factory makes: {e}"
                ) from None
            if "filters" in what:
                result.filters.append(filters(model, layer))
            if "maximize" in what:
                target = channel(layer, list(units))
                result.maximizations.append(
                    maximize(model, target, maximize_steps, size=size, progress=False, **maximize_options)
                )
    finally:
        if own_reader:
            reader.close()
    return result


def _fresh(model_factory: Callable[[], nn.Module]) -> nn.Module:
    model = model_factory()
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model_factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _strip(maximization: Maximization) -> np.ndarray:
    """The maximisation's images side by side with a 1-pixel white border, as ``[H, W, 3]`` uint8."""
    tiles = []
    for image in maximization.images:
        array = _display(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        tiles.append(np.pad(array, ((1, 1), (1, 0), (0, 0)), constant_values=1.0))
    strip = np.concatenate([*tiles, np.ones((tiles[0].shape[0], 1, 3))], axis=1)
    return (strip.clip(0, 1) * 255).round().astype(np.uint8)
