"""Methods checked against closed forms on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import explain_fast
from torch import nn

import deepscope as ds


def linear_model(features: int = 6, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(features, classes).eval()


def test_saliency_of_a_linear_model_is_its_weight_row():
    model = linear_model()
    x = torch.randn(4, 6)
    e = ds.explain(model, x, method="saliency", target=2)
    torch.testing.assert_close(e.attribution, model.weight[2].detach().expand(4, 6))


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients"])
def test_linear_attributions_are_weight_times_input(method):
    model = linear_model()
    x = torch.randn(4, 6)
    e = ds.explain(model, x, method=method, target=1)
    torch.testing.assert_close(e.attribution, model.weight[1].detach() * x, rtol=1e-5, atol=1e-6)


def test_lime_recovers_a_linear_model_exactly():
    model = linear_model()
    x = torch.randn(2, 6)
    e = ds.explain(model, x, method="lime", target=0, ridge=0.0, samples=100, seed=1)
    torch.testing.assert_close(e.attribution, model.weight[0].detach() * x, rtol=1e-4, atol=1e-5)


def test_lime_on_images_ranks_the_pixels_a_model_reads():
    """A model that sums one 4x4 corner: LIME's top grid cell is that corner."""

    class Corner(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, :, :4, :4].sum(dim=(1, 2, 3)), -x.sum(dim=(1, 2, 3)) * 0], dim=1)

    x = torch.rand(1, 3, 16, 16) + 1
    e = ds.explain(Corner(), x, method="lime", target=0, grid=4, samples=200, seed=0)
    assert e.heatmap[0, :4, :4].min() > e.heatmap[0, 4:, :].abs().max() * 10


def test_integrated_gradients_completeness():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    x = torch.randn(5, 6)
    e = ds.explain(model, x, method="integrated_gradients", steps=64, target=1)
    with torch.no_grad():
        expected = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(e.attribution.sum(dim=1), expected, rtol=1e-3, atol=1e-4)


class GapNet(nn.Module):
    """Full-resolution feature maps, global average pooling, a linear head: CAM's architecture."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_cam_mean_is_the_logit_minus_bias():
    model = GapNet().eval()
    x = torch.randn(3, 3, 12, 12)
    e = ds.explain(model, x, method="cam", layer="features.2")
    with torch.no_grad():
        logits = model(x)
    classes = logits.argmax(1)
    expected = logits.gather(1, classes[:, None])[:, 0] - model.head.bias.detach()[classes]
    torch.testing.assert_close(e.heatmap.mean(dim=(1, 2)), expected, rtol=1e-5, atol=1e-5)


def test_gradcam_on_gap_linear_net_is_relu_of_cam():
    """With global average pooling and a linear head, Grad-CAM's weights are the head's weights / positions."""
    model = GapNet().eval()
    x = torch.randn(2, 3, 12, 12)
    cam = ds.explain(model, x, method="cam", layer="features.2").heatmap
    gradcam = ds.explain(model, x, method="gradcam", layer="features.2").heatmap
    torch.testing.assert_close(gradcam, cam.clamp(min=0) / 144, rtol=1e-5, atol=1e-7)


def test_occluding_an_irrelevant_region_changes_nothing_for_every_perturbation_method():
    class LeftHalf(nn.Module):
        def forward(self, x):
            left = x[..., :8].sum(dim=(1, 2, 3))
            return torch.stack([left, -left], dim=1)

    x = torch.randn(2, 3, 16, 16)
    for method in ["occlusion", "lime", "saliency", "integrated_gradients"]:
        options = {"ridge": 0.0} if method == "lime" else {}  # a ridge penalty leaks weight between features
        e = explain_fast(LeftHalf(), x, method, target=0, **options)
        assert e.heatmap[..., 8:].abs().max() < 1e-5, method
