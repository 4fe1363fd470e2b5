"""The result of ``ds.explain``: plain tensors plus what produced them, displayable in Jupyter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .errors import BadInputError
from .render import FigureDisplay, NotebookFigure, TokenView, explanation_grid, overlay

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Explanation(FigureDisplay):
    """What one method says about a batch of inputs.

    Attributes:
        method: the method's name (one of ``ds.methods()``).
        heatmap: float32 CPU tensor ``[N, *spatial]`` at the input's resolution (``[N, H, W]`` for images,
            ``[N, L]`` for signals, ``[N, F]`` for feature vectors, ``[N, T]`` for token ids explained at a
            layer: one value per token, the layer attribution summed over its features by ``reduce``).
        attribution: float32 CPU tensor shaped like the inputs, where the method gives one value per input
            element (gradients, occlusion, LRP, ...); ``None`` for the CAM family. A gradient method given a
            ``layer`` attributes to that layer's output, so this has the output's shape (``[N, T, D]`` for an
            embedding layer, ``[N, C, h, w]`` for a feature map), and the heatmap reduces its features.
        targets: the class explained for each input (``[N]`` long), or ``None`` for a callable or unit target.
        scores: the model's score for the target on the clean inputs (``[N]`` float32), e.g. the class logit.
        inputs: the inputs explained (CPU float32), kept for rendering.
        layer: the layer a layer method used, ``None`` otherwise.
        options: every option the method ran with, defaults included.
        labels: a label per input's target, for figures.
        extras: what a method measured besides the maps, one value per input (``[N]`` float32), shown in the
            repr and the figure; LRP's ``"absorbed"``: the share of the score that did not reach the inputs.
    """

    method: str
    heatmap: Tensor
    attribution: Tensor | None
    targets: Tensor | None
    scores: Tensor
    inputs: Tensor
    layer: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.heatmap.shape[0]

    def overlay(self, index: int = 0, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
        """Input ``index`` with its heatmap laid over it, as a PIL image."""
        return overlay(self.inputs[index], self.heatmap[index], cmap=cmap, alpha=alpha)

    def figure(self, cmap: str = "jet", alpha: float = 0.5, max_inputs: int = 8) -> NotebookFigure:
        """A matplotlib figure: each input and its overlay, with target and score."""
        return explanation_grid([self], cmap=cmap, alpha=alpha, max_inputs=max_inputs)

    def text(self, tokens: Sequence[str] | Sequence[Sequence[str]]) -> TokenView:
        """The tokens coloured by their attribution (the heatmap ``[N, T]``): HTML in Jupyter, ``.html()`` for
        the string, ``.save(path)`` for a file (``.html``, or a picture such as ``.png``).

        ``tokens``: one list of strings per input (``tokenizer.convert_ids_to_tokens(ids)``, say), or a single
        list for a batch of one; each list has one string per position of the inputs.
        """
        if self.heatmap.ndim != 2:
            raise BadInputError(
                f"text() colours one value per token, but this heatmap is {tuple(self.heatmap.shape)}; explain "
                "token ids [N, T] at the embedding layer (layer=...) to get [N, T]."
            )
        if isinstance(tokens, str):
            raise BadInputError("tokens is a str; pass a list of strings, one per token (tokenizer output).")
        rows: list[list[str]] = (
            [[str(t) for t in tokens]] if all(isinstance(t, str) for t in tokens) else [list(t) for t in tokens]
        )
        if len(rows) != len(self):
            what = "a list of strings, which fits a batch of one" if len(rows) == 1 else f"{len(rows)} token lists"
            raise BadInputError(
                f"tokens is {what}, but the explanation has {len(self)} inputs; give one list per input."
            )
        for i, row in enumerate(rows):
            if len(row) != self.heatmap.shape[1] or not all(isinstance(t, str) for t in row):
                raise BadInputError(
                    f"input {i} has {self.heatmap.shape[1]} attributions (one per position), but {len(row)} tokens "
                    "were given; give one string per position, padding included."
                )
        captions = [
            f"input {i} | {self.method} | target {label}: score {float(score):.3g}"
            for i, (label, score) in enumerate(zip(self.labels, self.scores, strict=True))
        ]
        return TokenView(rows, list(self.heatmap), captions)

    def __repr__(self) -> str:
        shape = tuple(self.heatmap.shape)
        layer = f", layer={self.layer!r}" if self.layer else ""
        extras = "".join(f", {name}={_values(value)}" for name, value in self.extras.items())
        return f"Explanation(method={self.method!r}{layer}, heatmap={shape}{extras})"


def _values(value: Tensor, shown: int = 4) -> str:
    """A few per-input values, or their range when there are more."""
    numbers = value.flatten().tolist()
    if len(numbers) <= shown:
        return "[" + ", ".join(f"{number:.3g}" for number in numbers) + "]"
    return f"{min(numbers):.3g}..{max(numbers):.3g} over {len(numbers)} inputs"


@dataclass
class MultiInputExplanation(FigureDisplay):
    """What one method says about a model with several inputs (``ds.explain(model, (x1, x2, ...))``).

    The attributes of :class:`Explanation`, with ``inputs``, ``heatmap`` and ``attribution`` as tuples, one entry
    per input: ``heatmap[j]`` is input ``j``'s map at its resolution, ``None`` for an input without spatial axes
    (a feature vector ``[N, F]``: its attribution says it all) and, for a layer method (CAM family), for every
    input but the first with spatial axes, where its one map goes. :meth:`for_input` gives input ``j``'s part as
    an :class:`Explanation` (a feature vector's heatmap there is its attribution, as when it is explained alone);
    the figure and :meth:`overlay` show the first input with spatial axes.
    """

    method: str
    heatmap: tuple[Tensor | None, ...]
    attribution: tuple[Tensor, ...] | None
    targets: Tensor | None
    scores: Tensor
    inputs: tuple[Tensor, ...]
    layer: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.scores.shape[0]

    def for_input(self, j: int) -> Explanation:
        """Input ``j``'s part of the explanation, as an :class:`Explanation` of that input alone."""
        if not -len(self.inputs) <= j < len(self.inputs):
            raise BadInputError(f"input {j} is out of range: there are {len(self.inputs)} inputs.")
        attribution = None if self.attribution is None else self.attribution[j]
        heatmap = self.heatmap[j]
        if heatmap is None:
            if attribution is None or attribution.ndim > 2:
                raise BadInputError(
                    f"{self.method} has no map for input {j}: its map belongs to input {self._drawn()}, the first "
                    "with spatial axes."
                )
            heatmap = attribution  # a feature vector's map is its attribution, as for a single [N, F] input
        return Explanation(
            method=self.method,
            heatmap=heatmap,
            attribution=attribution,
            targets=self.targets,
            scores=self.scores,
            inputs=self.inputs[j],
            layer=self.layer,
            options=self.options,
            labels=self.labels,
            extras=self.extras,
        )

    def _drawn(self) -> int:
        """The input figures show: the first with spatial axes."""
        for j, x in enumerate(self.inputs):
            if x.ndim > 2:
                return j
        shapes = ", ".join(str(tuple(x.shape)) for x in self.inputs)
        raise BadInputError(
            f"no input has spatial axes to draw (shapes {shapes}); read the attributions (e.attribution[j]) or "
            "draw one input's part with e.for_input(j).figure()."
        )

    def overlay(self, index: int = 0, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
        """Input ``index`` of the first input with spatial axes, with its heatmap laid over it."""
        return self.for_input(self._drawn()).overlay(index, cmap=cmap, alpha=alpha)

    def figure(self, cmap: str = "jet", alpha: float = 0.5, max_inputs: int = 8) -> NotebookFigure:
        """The figure of the first input with spatial axes (:meth:`Explanation.figure`)."""
        return self.for_input(self._drawn()).figure(cmap=cmap, alpha=alpha, max_inputs=max_inputs)

    def __repr__(self) -> str:
        shapes = tuple(None if m is None else tuple(m.shape) for m in self.heatmap)
        layer = f", layer={self.layer!r}" if self.layer else ""
        extras = "".join(f", {name}={_values(value)}" for name, value in self.extras.items())
        return (
            f"MultiInputExplanation(method={self.method!r}{layer}, inputs={len(self.inputs)}, heatmap={shapes}{extras})"
        )
