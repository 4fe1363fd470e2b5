"""Rendering, in one place: colour maps, heatmap overlays, grids, figures and their display in Jupyter.

Figures are plain ``matplotlib.figure.Figure`` objects (a subclass that shows itself as a PNG): nothing here
imports pyplot or selects a backend, so the user's backend (Jupyter's inline one, say) stays as they set it.
This module imports nothing else of deepscope; every result draws through it.
"""

from __future__ import annotations

import html
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor


class NotebookFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter shows as a PNG of itself.

    IPython registers its display of matplotlib figures only once pyplot (or ``%matplotlib inline``) is active;
    without it a bare ``Figure`` shows as ``<Figure size ...>``. Everything else is matplotlib's ``Figure``.
    """

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(width: float, height: float) -> NotebookFigure:
    """An empty figure of ``width`` x ``height`` inches with constrained layout, outside pyplot."""
    return NotebookFigure(figsize=(width, height), layout="constrained")


class FigureDisplay(ABC):
    """A result that Jupyter shows as the PNG of its :meth:`figure`."""

    @abstractmethod
    def figure(self) -> NotebookFigure:
        """The result drawn as a matplotlib figure."""

    def _repr_png_(self) -> bytes:
        return figure_png(self.figure())


class TableDisplay(FigureDisplay):
    """A result with a :meth:`table` of strings, which Jupyter shows as an HTML table (PNG: its figure)."""

    @abstractmethod
    def table(self) -> list[list[str]]:
        """The header row, then one row of strings per entry."""

    def _repr_html_(self) -> str:
        return html_table(self.table())


def html_table(lines: Sequence[Sequence[str]]) -> str:
    """A header row and rows of strings as an HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in line) + "</tr>" for line in lines[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Overlaid(Protocol):
    """What :func:`explanation_grid` draws: an explanation's inputs, maps, and the target and score of each."""

    method: str
    heatmap: Tensor
    scores: Tensor
    inputs: Tensor
    labels: list[str]
    extras: dict[str, Tensor]

    def __len__(self) -> int: ...


def to_image_array(image: Tensor) -> np.ndarray:
    """An input ``[C, H, W]`` (1 or 3 channels, any range) or ``[H, W]`` as a float RGB array in [0, 1]."""
    image = image.detach().float().cpu()
    if image.ndim == 3 and image.shape[0] not in (1, 3):
        image = image.mean(dim=0)
    image = image.permute(1, 2, 0) if image.ndim == 3 else image[..., None]
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    array = image.numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def is_signed(heatmap: Tensor) -> bool:
    """Whether a map has negative values worth showing (more than 1 % of its largest magnitude)."""
    peak = heatmap.abs().max()
    return bool(peak > 0 and heatmap.min() < -0.01 * peak)


def normalise(heatmap: Tensor, percentile: float = 99.5) -> tuple[np.ndarray, bool]:
    """A map scaled to [0, 1] for a colour map, and whether it is signed.

    The scale is the ``percentile`` of the map's magnitudes, not its maximum, and values beyond it are clipped:
    gradient maps have a few extreme pixels that would otherwise leave the rest of the picture dark (the
    visualisation of Smilkov et al.). Non-negative maps run from their minimum to that scale; signed maps are
    symmetric, with zero at 0.5.
    """
    heatmap = heatmap.detach().float().cpu()
    signed = is_signed(heatmap)
    magnitudes = heatmap.abs().flatten()
    if magnitudes.numel() > 1_000_000:  # quantile's limit; a strided sample is plenty for a display scale
        magnitudes = magnitudes[:: magnitudes.numel() // 1_000_000 + 1]
    scale = float(torch.quantile(magnitudes, percentile / 100)) if magnitudes.numel() else 0.0
    if scale == 0:
        scale = float(magnitudes.max()) if magnitudes.numel() else 0.0
    if scale == 0:
        return np.zeros(tuple(heatmap.shape), dtype=np.float32), signed
    if signed:
        return (heatmap / (2 * scale) + 0.5).clamp(0, 1).numpy(), signed
    low = float(heatmap.min())
    span = scale - low if scale > low else 1.0
    return ((heatmap - low) / span).clamp(0, 1).numpy(), signed


def colorize(heatmap: Tensor, cmap: str | None = None) -> np.ndarray:
    """A map as an RGB float array through a matplotlib colour map ('jet', or 'bwr' for signed maps)."""
    from matplotlib import colormaps

    values, signed = normalise(heatmap)
    name = cmap or ("bwr" if signed else "jet")
    return colormaps[name](values)[..., :3]


def overlay(image: Tensor, heatmap: Tensor, cmap: str | None = None, alpha: float = 0.5) -> Image.Image:
    """``heatmap`` ``[H, W]`` blended over ``image`` ``[C, H, W]`` as a PIL image."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must lie in [0, 1].")
    base = to_image_array(image)
    if heatmap.ndim != 2 or tuple(heatmap.shape) != base.shape[:2]:
        raise ValueError(f"heatmap shape {tuple(heatmap.shape)} does not match the image {base.shape[:2]}.")
    blended = (1 - alpha) * base + alpha * colorize(heatmap, cmap)
    return Image.fromarray((blended.clip(0, 1) * 255).astype(np.uint8))


def explanation_grid(
    explanations: Sequence[Overlaid],
    cmap: str | None = None,
    alpha: float = 0.5,
    max_inputs: int = 8,
    titles: Sequence[str] | None = None,
    marks: Sequence[str] | None = None,
) -> NotebookFigure:
    """Rows of inputs, columns of methods: the input, then each explanation's overlay.

    ``titles`` labels each row (say "label: coat"); ``marks`` adds a line per row (say "misclassified").
    """
    if not explanations:
        raise ValueError("no explanations to draw.")
    first = explanations[0]
    rows = min(len(first), max_inputs)
    cols = 1 + len(explanations)
    figure = new_figure(2.2 * cols, 2.3 * rows)
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        image = first.inputs[r]
        if image.ndim >= 2:
            axes[r, 0].imshow(to_image_array(image))
        else:  # a feature vector or a sequence of token ids: its values
            axes[r, 0].plot(image.numpy())
        label = titles[r] if titles else f"input {r}"
        if marks and marks[r]:
            label += f"\n{marks[r]}"
        axes[r, 0].set_title(label, fontsize=8)
        for c, explanation in enumerate(explanations, start=1):
            if explanation.heatmap[r].ndim == 2:
                axes[r, c].imshow(overlay(image, explanation.heatmap[r], cmap=cmap, alpha=alpha))
            else:
                axes[r, c].plot(explanation.heatmap[r].numpy())
            score = float(explanation.scores[r])
            notes = "".join(f"\n{name} {float(value[r]):.2f}" for name, value in explanation.extras.items())
            axes[r, c].set_title(f"{explanation.method}\n{explanation.labels[r]}: {score:.2f}{notes}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (matplotlib's Agg renderer, whatever backend is active)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_rgba(figure: Figure) -> np.ndarray:
    """The figure drawn by Agg as uint8 RGBA ``[H, W, 4]``, at its own size and dpi.

    The figure gets an Agg canvas for the drawing and its own canvas back afterwards (a notebook's or a window's,
    as ``savefig`` does), so pyplot and the backend are never touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    own = figure.canvas
    try:
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        return np.array(canvas.buffer_rgba())  # a copy: the buffer belongs to the canvas
    finally:
        figure.set_canvas(own)


def save_figure(figure: Figure, path: str, dpi: int = 100) -> None:
    figure.savefig(path, dpi=dpi)


def tile(images: Sequence[Image.Image], columns: int) -> Image.Image:
    """PIL images of one size pasted into a grid."""
    if not images:
        raise ValueError("no images to tile.")
    width, height = images[0].size
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        canvas.paste(image, ((i % columns) * width, (i // columns) * height))
    return canvas


# Tokens coloured by their attribution ----------------------------------------------------------------------------


def diverging_rgb(values: Tensor) -> np.ndarray:
    """Values in [-1, 1] as RGB in [0, 1]: blue (-1), white (0), red (1).

    Matplotlib's 'bwr' computed exactly rather than through its 256-step lookup table, so that 0 is pure white
    and 1 pure red.
    """
    v = values.detach().float().clamp(-1, 1).cpu().numpy()
    positive, negative = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    return np.stack([1 - negative, 1 - positive - negative, 1 - positive], axis=-1)


def token_colours(values: Tensor) -> np.ndarray:
    """One RGB colour per token ``[T, 3]`` for one input's attributions ``[T]``: diverging, symmetric around 0,
    scaled by this input's largest magnitude (so its strongest token is fully saturated)."""
    values = values.detach().float().cpu()
    scale = float(values.abs().max()) if values.numel() else 0.0
    return diverging_rgb(values / scale if scale > 0 else torch.zeros_like(values))


def _ink(rgb: np.ndarray) -> str:
    """Black text on light backgrounds, white on dark ones (relative luminance)."""
    return "#000" if 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 0.45 else "#fff"


def token_html(tokens: Sequence[str], values: Tensor, caption: str = "") -> str:
    """One input's tokens as HTML spans coloured by :func:`token_colours`; each token is escaped and shows its
    value on hover."""
    if len(tokens) != values.numel():
        raise ValueError(f"{len(tokens)} tokens for {values.numel()} values.")
    spans = []
    for token, value, rgb in zip(tokens, values.flatten().tolist(), token_colours(values.flatten()), strict=True):
        r, g, b = (rgb * 255).round().astype(int).tolist()
        spans.append(
            f'<span title="{value:.4g}" style="background-color: rgb({r}, {g}, {b}); color: {_ink(rgb)}; '
            f'padding: 1px 3px; margin: 1px; border-radius: 3px; white-space: pre">{html.escape(str(token))}</span>'
        )
    head = f'<div style="font-size: 0.85em; color: #555">{html.escape(caption)}</div>' if caption else ""
    return f'<div style="line-height: 2; margin-bottom: 0.5em">{head}{" ".join(spans)}</div>'


class TokenView(FigureDisplay):
    """Tokens coloured by their attribution, one line per input: HTML in Jupyter (:meth:`html`), a PNG elsewhere
    (:meth:`figure`); :meth:`save` writes either. Red is for the target, blue against, white neutral; each input
    has its own scale, its largest magnitude fully saturated."""

    def __init__(self, tokens: Sequence[Sequence[str]], values: Sequence[Tensor], captions: Sequence[str]) -> None:
        self.tokens = [list(t) for t in tokens]
        self.values = [v.detach().float().cpu().flatten() for v in values]
        self.captions = list(captions)
        for i, (toks, vals) in enumerate(zip(self.tokens, self.values, strict=True)):
            if len(toks) != vals.numel():
                raise ValueError(f"input {i}: {len(toks)} tokens for {vals.numel()} values.")

    def html(self) -> str:
        """The HTML fragment: a ``<div>`` per input."""
        return "".join(token_html(t, v, c) for t, v, c in zip(self.tokens, self.values, self.captions, strict=True))

    def _repr_html_(self) -> str:
        return self.html()

    def figure(self, width: float = 8.0, fontsize: float = 10.0) -> NotebookFigure:
        """The same picture drawn by matplotlib: monospaced tokens on their colours, lines wrapped at ``width``
        inches."""
        char = 0.6 * fontsize / 72  # a monospaced glyph's advance, in inches
        line = 2.1 * fontsize / 72
        margin = 0.15
        rows: list[list[tuple[str, float, np.ndarray]]] = []  # per drawn line: (text, x, colour)
        captions: dict[int, str] = {}
        for tokens, values, caption in zip(self.tokens, self.values, self.captions, strict=True):
            if caption:
                captions[len(rows)] = caption
                rows.append([])
            rows.append([])
            x = margin
            for token, rgb in zip(tokens, token_colours(values), strict=True):
                advance = (len(token) + 1) * char
                if x + advance > width - margin and rows[-1]:
                    rows.append([])
                    x = margin
                rows[-1].append((token, x, rgb))
                x += advance
        height = line * max(len(rows), 1) + 2 * margin
        used = max((x + (len(t) + 1) * char for row in rows for t, x, _ in row), default=0.0)
        used = max([used] + [margin + 0.8 * len(c) * char for c in captions.values()])
        width = min(width, max(used + margin, 2.0))  # no empty space right of the longest line
        figure = NotebookFigure(figsize=(width, height))
        for r, row in enumerate(rows):
            y = 1 - (margin + (r + 0.5) * line) / height
            if r in captions:
                figure.text(margin / width, y, captions[r], fontsize=fontsize * 0.8, color="#555", va="center")
            for token, x, rgb in row:
                box = {"facecolor": tuple(rgb), "edgecolor": "none", "boxstyle": "round,pad=0.2"}
                figure.text(
                    x / width, y, token, family="monospace", fontsize=fontsize, va="center", color=_ink(rgb), bbox=box
                )
        return figure

    def save(self, path: str) -> None:
        """Write the view: an HTML page for ``.html``/``.htm``, else the figure (PNG, PDF, SVG, ...)."""
        if str(path).lower().endswith((".html", ".htm")):
            with open(path, "w", encoding="utf-8") as file:
                file.write(
                    f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>{self.html()}</body></html>\n'
                )
        else:
            save_figure(self.figure(), path)
