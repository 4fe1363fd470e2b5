"""Rendering: overlays, grids, Jupyter display."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import tiny_cnn
from PIL import Image

import deepscope as ds
from deepscope import render


def test_overlay_blends_image_and_colour_map():
    image = torch.zeros(3, 8, 8)
    image[:, :, 4:] = 1.0  # right half white
    heatmap = torch.zeros(8, 8)
    heatmap[:4] = 1.0  # top half hot
    plain = np.asarray(ds.overlay(image, heatmap, alpha=0.0))
    assert plain[0, 0].tolist() == [0, 0, 0] and plain[0, 7].tolist() == [255, 255, 255]
    only_map = np.asarray(ds.overlay(image, heatmap, cmap="gray", alpha=1.0))
    assert only_map[0, 0].tolist() == [255, 255, 255] and only_map[7, 0].tolist() == [0, 0, 0]


def test_signed_maps_use_a_diverging_scale_centred_on_zero():
    heatmap = torch.tensor([[-1.0, 0.0, 1.0]])
    values, signed = render.normalise(heatmap)
    assert signed and values.tolist() == [[0.0, 0.5, 1.0]]
    values, signed = render.normalise(torch.tensor([[0.0, 2.0]]))
    assert not signed and values.tolist() == [[0.0, 1.0]]


def test_overlay_checks_shapes_and_alpha():
    with pytest.raises(ValueError, match="does not match"):
        ds.overlay(torch.zeros(3, 8, 8), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="alpha"):
        ds.overlay(torch.zeros(3, 8, 8), torch.zeros(8, 8), alpha=2)


def test_explanation_displays_in_jupyter_and_as_pil():
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    e = ds.explain(model, x, method="gradcam")
    png = e._repr_png_()
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert e.overlay(1).size == (16, 16)


def test_compare_draws_methods_side_by_side():
    model = tiny_cnn()
    x = torch.randn(3, 3, 16, 16)
    figure = ds.compare(model, x, methods=["saliency", "gradcam"], titles=["a", "b", "c"], marks=["", "wrong", ""])
    axes = figure.get_axes()
    assert len(axes) == 3 * 3
    assert axes[0].get_title() == "a" and "wrong" in axes[3].get_title()
    assert axes[1].get_title().startswith("saliency") and axes[2].get_title().startswith("gradcam")


def test_tile_pastes_a_grid():
    images = [Image.new("RGB", (4, 4), c) for c in ["red", "green", "blue"]]
    grid = render.tile(images, columns=2)
    assert grid.size == (8, 8)
    assert grid.getpixel((5, 1)) == (0, 128, 0) and grid.getpixel((5, 5)) == (255, 255, 255)


def test_one_extreme_pixel_does_not_darken_the_rest():
    heatmap = torch.full((40, 40), 1.0)
    heatmap[0, 0] = 1000.0
    heatmap[20:, :] = 0.0
    values, _ = render.normalise(heatmap)
    assert values[0, 0] == 1.0 and values[10, 10] > 0.9 and values[30, 30] == 0.0
