"""pytorch-grad-cam's family (HiResCAM, XGradCAM, LayerCAM, Eigen-CAM, Ablation-CAM, FullGrad, aug_smooth, eigen_smooth)
checked against pytorch-grad-cam on torchvision architectures with random weights.

The peer scales each map to [0, 1] and resizes it with cv2 (bilinear, half-pixel centres: the same numbers as
torch's ``align_corners=False``), so our heatmap scaled to [0, 1] must equal its output to float tolerance. A
principal component's sign is arbitrary: where one is taken, the peer's is set by our rule (agree with the sum over
channels) before its post-processing.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import minmax, tiny_cnn
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import deepscope as ds
from deepscope.explain.base import method_class
from deepscope.explain.cam import CAMMethod, first_component

PEERS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
}


@functools.cache  # built once: neither side changes the model (vgg11's initialisation alone takes seconds)
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@functools.cache
def vgg11() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg11(num_classes=10).eval()


# The layer of each is a ReLU's (or a max pool's after one), so that Ablation-CAM's zeroing is the peer's too.
ARCHITECTURES = {
    "tiny": (tiny_cnn, "relu3", (3, 16, 16)),
    "resnet18": (resnet18, "layer4", (3, 64, 64)),
    "vgg11": (vgg11, "features.15", (3, 64, 64)),
}


def setup(name: str, n: int = 2, size: int | None = None) -> tuple[nn.Module, str, torch.Tensor, torch.Tensor]:
    make, layer, shape = ARCHITECTURES[name]
    shape = shape if size is None else (3, size, size)
    model = make()
    torch.manual_seed(3)
    x = torch.randn(n, *shape)
    with torch.no_grad():
        classes = model(x).argmax(1)
    return model, layer, x, classes


def peer_map(method: str, model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor, **call) -> torch.Tensor:
    """pytorch-grad-cam's output; a principal component's sign set to agree with the channels' sum."""
    peer = PEERS[method]

    class Signed(peer):  # type: ignore[misc, valid-type]
        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
            cam = super().get_cam_image(input_tensor, target_layer, targets, activations, grads, eigen_smooth)
            if eigen_smooth or peer is EigenCAM:
                if peer is EigenCAM:
                    summed = activations.sum(axis=1)
                else:
                    summed = super().get_cam_image(input_tensor, target_layer, targets, activations, grads, False)
                agree = (cam * summed).reshape(len(cam), -1).sum(axis=1)
                cam = np.where(agree[:, None, None] < 0, -cam, cam)
            return cam

    layers = [] if method == "fullgrad" else [dict(model.named_modules())[layer]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = Signed(model=model, target_layers=layers)
        try:
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes], **call)
        finally:
            cam.activations_and_grads.release()
    return torch.as_tensor(out)


def ours(method: str, model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor, **options) -> torch.Tensor:
    at = {} if method == "fullgrad" else {"layer": layer}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method=method, target=classes, **at, **options).heatmap


def assert_same_map(mine: torch.Tensor, peer: torch.Tensor) -> None:
    assert (peer.flatten(1).amax(1) > 0).all(), "an all-zero map proves nothing"
    torch.testing.assert_close(minmax(mine), peer, rtol=0, atol=2e-4)


CASES = [
    *[(m, False) for m in ("hirescam", "xgradcam", "layercam", "eigencam")],
    *[(m, True) for m in ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam")],
]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize(("method", "eigen_smooth"), CASES)
def test_cam_methods_equal_pytorch_grad_cam(arch, method, eigen_smooth):
    model, layer, x, classes = setup(arch)
    mine = ours(method, model, layer, x, classes, eigen_smooth=eigen_smooth)
    assert_same_map(mine, peer_map(method, model, layer, x, classes, eigen_smooth=eigen_smooth))


@pytest.mark.parametrize(("arch", "layer", "size"), [("tiny", "relu3", 16), ("resnet18", "layer3", 32)])
def test_ablationcam_equals_pytorch_grad_cam(arch, layer, size):
    model, _, x, classes = setup(arch, 1, size)  # resnet18's layer3: 256 channels on a 2x2 grid at 32 pixels
    mine = ours("ablationcam", model, layer, x, classes, batch_size=128)
    assert_same_map(mine, peer_map("ablationcam", model, layer, x, classes))


@pytest.mark.parametrize("arch", ["tiny", "resnet18", "vgg11"])
def test_fullgrad_equals_pytorch_grad_cam(arch):
    model, layer, x, classes = setup(arch)
    assert_same_map(ours("fullgrad", model, layer, x, classes), peer_map("fullgrad", model, layer, x, classes))


@pytest.mark.parametrize(
    ("arch", "method"), [("tiny", "gradcam"), ("tiny", "layercam"), ("tiny", "fullgrad"), ("resnet18", "gradcam")]
)
def test_aug_smooth_equals_pytorch_grad_cam(arch, method):
    model, layer, x, classes = setup(arch)
    mine = ours(method, model, layer, x, classes, aug_smooth=True)
    expected = peer_map(method, model, layer, x, classes, aug_smooth=True)
    assert mine.min() >= 0 and mine.max() <= 1  # a mean of maps each scaled to [0, 1]
    torch.testing.assert_close(mine, expected, rtol=0, atol=2e-4)


def test_aug_smooth_keeps_the_clean_scores_and_refuses_several_inputs():
    model, layer, x, _ = setup("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = ds.explain(model, x, method="gradcam", layer=layer, aug_smooth=True)
    torch.testing.assert_close(e.scores, model(x).amax(1).detach())
    with pytest.raises(ds.BadInputError, match="aug_smooth"):
        ds.explain(model, (x, x), method="gradcam", layer=layer, aug_smooth=True)


def test_hirescam_mean_is_the_score_through_a_pooled_head():
    """HiResCAM's guarantee (Draelos & Carin): before a global average pool and a linear head, the unclipped map
    sums (over positions, divided by their count) to the class logit minus the head's bias."""
    model, _, x, classes = setup("tiny")
    acts = model.relu3(model.conv3(model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x)))))))
    weights = model.fc.weight[classes][:, :, None, None]
    hires = (weights / acts[0].shape[-1] ** 2 * acts).sum(1)  # d(logit)/dA = w / positions, times A
    logits = model(x).gather(1, classes[:, None])[:, 0] - model.fc.bias[classes]
    torch.testing.assert_close(hires.flatten(1).sum(1), logits)
    e = ds.explain(model, x, method="hirescam", layer="relu3", target=classes)
    coarse = torch.nn.functional.interpolate(hires.clamp(min=0)[:, None], size=(16, 16), mode="bilinear")[:, 0]
    torch.testing.assert_close(e.heatmap, coarse.detach(), rtol=1e-4, atol=1e-6)


def test_first_component_is_the_principal_direction():
    """On maps that are one pattern times per-channel gains plus nothing else, the first component is the pattern
    (centred), signed to agree with the channels' sum."""
    torch.manual_seed(0)
    pattern = torch.rand(5, 6)
    gains = torch.rand(8) + 0.5
    maps = gains[None, :, None, None] * pattern[None, None]
    projection = first_component(maps)[0]
    centred = pattern - pattern.mean()
    cosine = (projection * centred).sum() / (projection.norm() * centred.norm())
    assert cosine > 1 - 1e-5
    assert first_component(-maps)[0].mul(-centred).sum() > 0  # the sign follows the (now negative) sum


def test_every_cam_method_takes_the_smoothing_options():
    cams = [m for m in ds.methods() if issubclass(method_class(m), CAMMethod)]
    assert {"hirescam", "xgradcam", "layercam", "eigencam", "ablationcam"} <= set(cams)
    for m in cams:
        assert "eigen_smooth" in method_class(m).options
    assert "aug_smooth" in method_class("fullgrad").options
