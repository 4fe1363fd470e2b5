"""On a real task: Grad-CAM of a CNN trained on FashionMNIST is more faithful than a random map (deletion)."""

from __future__ import annotations

import pytest
import torch

import deepscope as ds


@pytest.fixture(scope="module")
def fashion(trained_fashion_cnn) -> tuple[torch.nn.Module, torch.Tensor]:
    """The shared trained FashionCNN, and 32 test images it classifies correctly."""
    model, inputs, labels = trained_fashion_cnn
    inputs, labels = inputs[:500], labels[:500]
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    return model, inputs[predicted == labels][:32]


def test_gradcam_deletes_faster_than_a_random_map(fashion: tuple[torch.nn.Module, torch.Tensor]) -> None:
    model, images = fashion
    gradcam = ds.explain(model, images, method="gradcam")
    random = torch.rand(gradcam.heatmap.shape, generator=torch.Generator().manual_seed(0))
    # Deleted pixels become a blurred copy of the image. With baseline 0 (the data set's mean grey) the grey
    # patches themselves move this briefly trained model's output, and Grad-CAM's coarse 7 x 7 map measured
    # barely better than a random map (0.22 against 0.23).
    ours = ds.faithfulness(model, images, gradcam, metric="deletion", steps=28, baseline="blur")
    chance = ds.faithfulness(model, images, random, steps=28, baseline="blur", target=gradcam.targets)
    assert ours.auc.mean() < chance.auc.mean() - 0.05, (float(ours.auc.mean()), float(chance.auc.mean()))
    assert (ours.auc < chance.auc).float().mean() > 0.75  # image by image, not only on average


def test_occlusion_with_the_background_baseline_points_at_the_garment(trained_fashion_cnn) -> None:
    """The demo's occlusion (4 x 4 black patches, stride 2, drop in class probability) puts the largest drop on the
    garment (the pixels above 0.1) in most images; patches of the data set's mean grey add a grey square to the
    black background, and their largest drop lands on the background in most images instead."""
    from deepscope.demo.data import MEAN, STD
    from deepscope.demo.fashion import OPTIONS

    model, inputs, _labels = trained_fashion_cnn
    images = inputs[:20]
    garment = (images[:, 0] * STD + MEAN > 0.1).flatten(1)

    def on_garment(**options: object) -> float:
        heatmap = ds.explain(model, images, method="occlusion", **options).heatmap
        return float(garment.gather(1, heatmap.flatten(1).argmax(dim=1, keepdim=True)).float().mean())

    background = on_garment(**OPTIONS["occlusion"])
    grey = on_garment(**{**OPTIONS["occlusion"], "baseline": "mean", "data": inputs})
    # Measured: 0.90 against 0.30 (over 40 images 0.93 against 0.25).
    assert background >= 0.8 and grey <= background - 0.4, (background, grey)
