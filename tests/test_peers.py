"""Numbers checked against the implementations users trust: Captum and pytorch-grad-cam.

torchvision architectures with random weights and fixed seeds; agreement to float tolerance where both sides compute
the same thing, or rank correlation above 0.99 where only the peers' resizing differs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum import attr as captum
from conftest import built_once, minmax, spearman, tiny_cnn
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import deepscope as ds


def resnet18() -> nn.Module:
    return built_once("peers-resnet18", lambda: torchvision.models.resnet18(num_classes=10).eval())


def vgg11() -> nn.Module:  # its 133 M weights' initialisation took 4-8 s of each of 20 tests' setup
    return built_once("peers-vgg11", lambda: torchvision.models.vgg11(num_classes=10).eval())


ARCHITECTURES = {
    "tiny": (tiny_cnn, "conv3", (3, 16, 16)),
    "tiny_inplace": (lambda: tiny_cnn("inplace"), "conv3", (3, 16, 16)),
    "resnet18": (resnet18, "layer4", (3, 64, 64)),
    "vgg11": (vgg11, "features.15", (3, 64, 64)),
}


def batch(shape: tuple[int, ...], n: int = 2) -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(n, *shape)


def layer_of(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


@pytest.fixture(params=list(ARCHITECTURES))
def arch(request):
    make, layer, shape = ARCHITECTURES[request.param]
    return make(), layer, batch(shape), request.param


def _classes(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_saliency_equals_captum(arch):
    model, _, x, _ = arch
    classes = _classes(model, x)
    e = ds.explain(model, x, method="saliency")
    expected = captum.Saliency(model).attribute(x, target=classes, abs=False)
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.heatmap, expected.abs().amax(dim=1), rtol=1e-4, atol=1e-6)
    summed = ds.explain(model, x, method="saliency", reduce="sum_abs")
    torch.testing.assert_close(summed.heatmap, expected.abs().sum(dim=1), rtol=1e-4, atol=1e-6)


def test_input_x_gradient_equals_captum(arch):
    model, _, x, _ = arch
    e = ds.explain(model, x, method="input_x_gradient")
    expected = captum.InputXGradient(model).attribute(x, target=_classes(model, x))
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("baseline", [0.0, "blur", "tensor"])
def test_integrated_gradients_equals_captum(baseline):
    model, x = tiny_cnn(), batch((3, 16, 16), 3)
    if baseline == "tensor":
        baseline = torch.rand(1, 3, 16, 16)
    e = ds.explain(model, x, method="integrated_gradients", steps=20, batch_size=16, baseline=baseline)
    from deepscope.explain.gradients import make_baseline

    base = make_baseline(baseline, x)
    expected = captum.IntegratedGradients(model).attribute(
        x, baselines=base, target=_classes(model, x), n_steps=20, internal_batch_size=16
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-3, atol=1e-5)


def test_integrated_gradients_on_resnet_equals_captum():
    model, x = resnet18(), batch((3, 32, 32))
    e = ds.explain(model, x, method="integrated_gradients", steps=8, batch_size=8)
    expected = captum.IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=_classes(model, x), n_steps=8, internal_batch_size=8
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("ours", "peer"), [("guided_backprop", captum.GuidedBackprop), ("deconvnet", captum.Deconvolution)]
)
def test_relu_rules_equal_captum(arch, ours, peer):
    model, _, x, _ = arch
    e = ds.explain(model, x, method=ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = peer(model).attribute(x, target=_classes(model, x))
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)


def test_guided_backprop_reaches_functional_relu_where_captum_does_not():
    x = batch((3, 16, 16))
    functional, modules = tiny_cnn("functional"), tiny_cnn("modules")
    classes = _classes(modules, x)
    ours = ds.explain(functional, x, method="guided_backprop").attribution
    reference = captum.GuidedBackprop(modules).attribute(x, target=classes)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum_functional = captum.GuidedBackprop(functional).attribute(x, target=classes)
    plain = captum.Saliency(functional).attribute(x, target=classes, abs=False)
    # The peer's trap: on functional ReLUs its guided backprop is silently the plain gradient.
    torch.testing.assert_close(captum_functional, plain)
    assert not torch.allclose(ours, plain, atol=1e-4)


def test_guided_backprop_warns_when_the_model_has_no_relu():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()
    with pytest.warns(UserWarning, match="no ReLU"):
        ds.explain(model, batch((3, 16, 16)), method="guided_backprop")


def _grad_cam_peer(peer, model, layer, x, classes, **kwargs):
    with peer(model=model, target_layers=[layer], **kwargs) as cam:
        return torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))


@pytest.mark.parametrize(("ours", "peer"), [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)])
def test_cam_family_agrees_with_pytorch_grad_cam(arch, ours, peer):
    model, layer, x, name = arch
    classes = _classes(model, x)
    e = ds.explain(model, x, method=ours, layer=layer)
    # The peer reads a layer's output after a following in-place ReLU has overwritten it, so its reference is
    # computed on the twin without in-place ReLUs (same weights); ours must not depend on that difference.
    reference = tiny_cnn("modules") if name == "tiny_inplace" else model
    expected = _grad_cam_peer(peer, reference, layer_of(reference, layer), x, classes)
    ours_scaled = minmax(e.heatmap)
    for i in range(len(x)):
        if expected[i].max() == 0:  # the peer returns an all-zero map where Grad-CAM is zero everywhere
            assert e.heatmap[i].abs().max() < 1e-6
            continue
        assert spearman(ours_scaled[i], expected[i]) > 0.99
        assert (ours_scaled[i] - expected[i]).abs().max() < 0.05


def test_gradcam_equals_captum_layer_gradcam(arch):
    model, layer, x, _ = arch
    classes = _classes(model, x)
    e = ds.explain(model, x, method="gradcam", layer=layer)
    coarse = captum.LayerGradCam(model, layer_of(model, layer)).attribute(x, target=classes, relu_attributions=True)
    expected = F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(e.heatmap, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("seed", "layer"), [(0, "conv2"), (1, "conv3")])
def test_scorecam_agrees_with_pytorch_grad_cam(seed, layer):
    # Seed 0's conv3 gives an all-zero Score-CAM (every weighted map negative): comparing zeros proves nothing.
    model, x = tiny_cnn(seed=seed), batch((3, 16, 16))
    classes = _classes(model, x)
    e = ds.explain(model, x, method="scorecam", layer=layer)
    assert (e.heatmap.flatten(1).amax(1) > 0).all()
    expected = _grad_cam_peer(ScoreCAM, model, layer_of(model, layer), x, classes)
    for i in range(len(x)):
        assert spearman(minmax(e.heatmap)[i], expected[i]) > 0.99


def test_guided_gradcam_equals_captum(arch):
    model, layer, x, _ = arch
    classes = _classes(model, x)
    e = ds.explain(model, x, method="guided_gradcam", layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = captum.GuidedGradCam(model, layer_of(model, layer)).attribute(
            x, target=classes, interpolate_mode="bilinear"
        )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)


def test_smoothgrad_is_the_mean_of_saliency_over_the_same_noise():
    model, x = tiny_cnn(), batch((3, 16, 16))
    classes = _classes(model, x)
    e = ds.explain(model, x, method="smoothgrad", samples=6, noise=0.2, seed=7, batch_size=64)
    generator = torch.Generator().manual_seed(7)
    flat = x.reshape(len(x), -1)
    sigma = (0.2 * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
    noise = torch.randn((6, *x.shape), generator=generator)
    saliency = captum.Saliency(model)
    grads = torch.stack([saliency.attribute(x + n * sigma, target=classes, abs=False) for n in noise])
    torch.testing.assert_close(e.attribution, grads.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.heatmap, grads.abs().amax(dim=2).mean(0), rtol=1e-4, atol=1e-6)


def test_smoothgrad_of_guided_backprop():
    model, x = tiny_cnn(), batch((3, 16, 16))
    e = ds.explain(model, x, method="smoothgrad", base="guided_backprop", samples=1, noise=0.0, seed=0)
    expected = captum.GuidedBackprop(model).attribute(x, target=_classes(model, x))
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)
