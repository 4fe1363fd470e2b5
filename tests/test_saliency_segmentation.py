"""examples/saliency_segmentation.py: a saliency map seeds a GrabCut-style mask that covers the object (seed 003)."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import numpy as np
import pytest
import torch

import deepscope as ds

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "saliency_segmentation.py")
HAS_CV2 = importlib.util.find_spec("cv2") is not None


def _example() -> ModuleType:
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("saliency_segmentation", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRABCUT = [False, pytest.param(True, marks=pytest.mark.skipif(not HAS_CV2, reason="opencv-python is not installed"))]


def test_seeds_are_the_saliency_quantiles() -> None:
    example = _example()
    saliency = np.arange(100, dtype=float).reshape(10, 10)
    sure_object, sure_background = example.seeds(saliency)
    assert sure_object.sum() == 5 and saliency[sure_object].min() >= 94.05  # the top 5 %
    assert sure_background.sum() == 30 and saliency[sure_background].max() <= 29.7  # the bottom 30 %
    with pytest.raises(ValueError, match="background < foreground"):
        example.seeds(saliency, foreground=0.2, background=0.3)


@pytest.mark.parametrize("grabcut", GRABCUT)
def test_the_mask_follows_the_saliency_not_the_brightness(grabcut: bool) -> None:
    """Two bright squares; the saliency points at one: the mask covers that one and leaves the other out."""
    example = _example()
    rng = np.random.default_rng(0)
    image = 0.2 + 0.05 * rng.standard_normal((32, 32, 3))
    left, right = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    left[8:20, 3:13], right[12:24, 19:29] = True, True
    image[left | right] = 0.9
    saliency = np.exp(-(((np.arange(32)[:, None] - 14) ** 2 + (np.arange(32)[None] - 8) ** 2) / 20.0))
    mask = example.segment(image.clip(0, 1), saliency, grabcut=grabcut)
    assert example.iou(mask, left) > 0.8
    assert not (mask & right).any()


@pytest.fixture(scope="module")
def disc_classifier() -> torch.nn.Module:
    return _example().disc_classifier()  # trained once for the module's tests (a few seconds)


@pytest.mark.parametrize("grabcut", GRABCUT)
def test_saliency_of_a_trained_cnn_segments_the_bright_object(disc_classifier: torch.nn.Module, grabcut: bool) -> None:
    """The CNN learnt only "is there a disc"; its saliency map, segmented, covers the disc of a new image."""
    example, model = _example(), disc_classifier
    images, _, discs = example.disc_images(4, 32, torch.Generator().manual_seed(7))
    for i in (1, 3):  # the images with a disc
        saliency = ds.explain(model, images[i : i + 1], method="saliency", target=1).heatmap[0].numpy()
        mask = example.segment(images[i].permute(1, 2, 0).numpy(), saliency, grabcut=grabcut)
        assert example.iou(mask, discs[i].numpy()) > 0.5
