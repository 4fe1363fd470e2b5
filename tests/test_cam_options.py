"""pytorch-grad-cam's smoothing options where the CAM base class does not carry them: FullGrad's ``eigen_smooth``
and guided Grad-CAM's ``aug_smooth``, against pytorch-grad-cam (the helpers of tests/test_cams.py)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from conftest import minmax
from pytorch_grad_cam import AblationCAM, GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam import fullgrad_cam as peer_fullgrad
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_cams import assert_same_map, ours, peer_map, setup
from torch import nn

import deepscope as ds


@pytest.fixture
def signed_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer's first principal component with its sign set by deepscope's rule (agree with the sum of the
    centred channels): an SVD's sign is arbitrary."""
    original = peer_fullgrad.get_2d_projection

    def signed(activation_batch: np.ndarray) -> np.ndarray:
        projections = original(activation_batch)
        for activations, projection in zip(activation_batch, projections, strict=True):
            rows = np.nan_to_num(activations).reshape(activations.shape[0], -1).T
            centred = rows - rows.mean(axis=0)
            if float((projection.reshape(-1) * centred.sum(axis=1)).sum()) < 0:
                projection *= -1
        return projections

    monkeypatch.setattr(peer_fullgrad, "get_2d_projection", signed)


@pytest.mark.parametrize(("arch", "size"), [("tiny", 32), ("resnet18", 32)])
def test_fullgrad_eigen_smooth_equals_pytorch_grad_cam(arch, size, signed_peer):
    model, layer, x, classes = setup(arch, size=size)
    mine = ours("fullgrad", model, layer, x, classes, eigen_smooth=True)
    assert mine.shape == (2, size, size) and mine.min() >= 0 and mine.max() <= 1 + 1e-6
    assert_same_map(mine, peer_map("fullgrad", model, layer, x, classes, eigen_smooth=True))


def peer_guided_gradcam(model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's recipe (its cam.py example): its Grad-CAM map, aug_smooth=True, times its guided
    backprop of each image (run on a copy: the peer swaps the model's ReLU modules)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]])
        try:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes], aug_smooth=True)
        finally:
            cam.activations_and_grads.release()
        guided = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")
        grads = [guided(x[i : i + 1].clone(), target_category=int(c)).transpose(2, 0, 1) for i, c in enumerate(classes)]
    return torch.as_tensor(np.stack(grads)) * torch.as_tensor(maps)[:, None]


def test_guided_gradcam_aug_smooth_equals_pytorch_grad_cams_recipe():
    """On the small CNN (aug_smooth's Grad-CAM on resnet18 is checked in tests/test_cams.py)."""
    model, layer, x, classes = setup("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = ds.explain(model, x, method="guided_gradcam", layer=layer, target=classes, aug_smooth=True)
    expected = peer_guided_gradcam(model, layer, x, classes)
    scale = float(expected.abs().max())
    assert scale > 0
    # the maps agree to 2e-4 (tests/test_cams.py), the guided gradients to float rounding
    torch.testing.assert_close(e.attribution, expected, rtol=0, atol=5e-4 * scale)
    torch.testing.assert_close(e.heatmap, e.attribution.abs().amax(dim=1))


def test_guided_gradcam_aug_smooth_of_a_flip_invariant_model_is_its_scaled_plain_map():
    """A model that sees an image and its mirror alike, and is linear in brightness up to the positive part: each
    augmented copy gives the same [0, 1] map, so the smoothed Grad-CAM factor is the plain one scaled to [0, 1]."""

    class Symmetric(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
            self.relu = nn.ReLU()
            self.head = nn.Linear(6, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.relu(self.conv(x) + self.conv(x.flip(-1)).flip(-1))
            return self.head(features.mean(dim=(2, 3)))

    model = Symmetric().eval()
    torch.manual_seed(1)
    half = torch.randn(2, 3, 8, 4)
    x = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smooth = ds.explain(model, x, method="guided_gradcam", layer="relu", target=0, aug_smooth=True)
        guided = ds.explain(model, x, method="guided_backprop", target=0).attribution
        cam = ds.explain(model, x, method="gradcam", layer="relu", target=0).heatmap
    assert (cam.flatten(1).amax(1) > 0).all()
    flat = cam.flatten(1)
    scaled = ((flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) + 1e-7)).view_as(cam)
    torch.testing.assert_close(smooth.attribution, guided * scaled[:, None], rtol=1e-4, atol=1e-6)


class ZeroAblation(AblationLayer):
    """pytorch-grad-cam's ablation layer, zeroing the channel as the paper does wherever the layer is."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.activations
        for i in range(output.size(0)):
            output[i, self.indices[i], :] = 0
        return output


def peer_ablationcam(model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = AblationCAM(model=model, target_layers=[dict(model.named_modules())[layer]], **kwargs)
        try:
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        finally:
            cam.activations_and_grads.release()
    return torch.as_tensor(out)


def test_ablationcam_zeroes_the_channel_where_the_peer_goes_1e7_below_the_minimum():
    """Both readings at a layer with negative values that no ReLU follows (a convolution before global average
    pooling and the head): deepscope zeroes the channel (the paper), and the peer's ablation layer given the
    paper's zero gives the same map; the peer's default (the channel set 1e7 below the layer's minimum) another.
    After a ReLU the two readings agree (tests/test_cams.py)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    _, _, x, _ = setup("tiny")
    with torch.no_grad():
        classes = model(x).argmax(1)
        assert model[:3](x).min() < 0
    mine = ours("ablationcam", model, "2", x, classes)
    assert_same_map(mine, peer_ablationcam(model, "2", x, classes, ablation_layer=ZeroAblation()))
    default = peer_ablationcam(model, "2", x, classes)
    assert (minmax(mine) - default).abs().max() > 0.05
