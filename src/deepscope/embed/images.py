"""Thumbnails placed on a canvas: at their 2D positions (the image scatter), or snapped to a grid (cs231n)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _rgb(thumbnail: np.ndarray) -> np.ndarray:
    return np.repeat(thumbnail[..., None], 3, axis=2) if thumbnail.ndim == 2 else thumbnail[..., :3]


def _unit(points: np.ndarray) -> np.ndarray:
    """Points scaled into [0, 1] on each axis."""
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - low) / np.where(high > low, high - low, 1.0)


def image_scatter(points: np.ndarray, thumbnails: np.ndarray, size: int = 1200, background: int = 255) -> Image.Image:
    """Each thumbnail pasted with its centre at its point, on a ``size`` x ``size`` canvas (later ones on top)."""
    height, width = thumbnails.shape[1:3]
    canvas = np.full((size, size, 3), background, dtype=np.uint8)
    unit = _unit(points)
    left = np.round(unit[:, 0] * (size - width)).astype(int)
    top = np.round((1 - unit[:, 1]) * (size - height)).astype(int)  # y grows upwards, as in the scatter plot
    for i in range(len(points)):
        canvas[top[i] : top[i] + height, left[i] : left[i] + width] = _rgb(thumbnails[i])
    return Image.fromarray(canvas)


def grid_cells(points: np.ndarray, columns: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Which point fills which cell of a ``rows`` x ``columns`` grid: the assignment of least total squared move.

    Returns ``(point_index, cell_index)``; with more points than cells, an even sample of the points is placed.
    Solved exactly by ``scipy.optimize.linear_sum_assignment`` (the Jonker-Volgenant idea the cs231n figure uses).
    """
    from scipy.optimize import linear_sum_assignment

    cells = columns * rows
    chosen = np.arange(len(points))
    if len(points) > cells:
        chosen = np.random.default_rng(0).choice(len(points), cells, replace=False)
    unit = _unit(points[chosen])
    gx, gy = np.meshgrid(np.linspace(0, 1, columns), np.linspace(1, 0, rows))
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    cost = ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    point, cell = linear_sum_assignment(cost)
    return chosen[point], cell


def grid_image(
    points: np.ndarray, thumbnails: np.ndarray, columns: int | None = None, gap: int = 1, background: int = 255
) -> Image.Image:
    """The thumbnails snapped to a square-ish grid so that neighbours in the projection stay neighbours.

    ``gap`` pixels of ``background`` separate the cells, so that images with dark borders stay apart.
    """
    # 40 x 40 cells by default: the exact assignment costs cells^2 memory, and more thumbnails are unreadable.
    columns = columns or max(1, min(40, math.isqrt(len(points))))
    rows = max(1, min(columns, math.ceil(len(points) / columns)))
    height, width = thumbnails.shape[1:3]
    step_y, step_x = height + gap, width + gap
    canvas = np.full((rows * step_y - gap, columns * step_x - gap, 3), background, dtype=np.uint8)
    for index, cell in zip(*grid_cells(points, columns, rows)):
        r, c = divmod(int(cell), columns)
        canvas[r * step_y : r * step_y + height, c * step_x : c * step_x + width] = _rgb(thumbnails[index])
    return Image.fromarray(canvas)
