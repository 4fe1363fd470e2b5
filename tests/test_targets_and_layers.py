"""Targets (classes, callables, units) and layers (defaults, repeated calls, token outputs)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import minmax, spearman, tiny_cnn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import deepscope as ds


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(3, 3, 16, 16)


def manual_gradient(model, x, score_fn):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score_fn(model, x).sum(), x)
    return grad


def test_one_class_per_input(x):
    model = tiny_cnn()
    e = ds.explain(model, x, method="saliency", target=[0, 3, 1])
    expected = manual_gradient(model, x, lambda m, t: m(t).gather(1, torch.tensor([[0], [3], [1]]))[:, 0])
    torch.testing.assert_close(e.attribution, expected)
    assert e.targets.tolist() == [0, 3, 1] and e.labels == ["0", "3", "1"]


def test_callable_target_for_a_regression_output(x):
    """Seed 002: explain a box coordinate of a regression head."""
    model = tiny_cnn()

    def top(output):
        return output[:, 1] - output[:, 3]

    e = ds.explain(model, x, method="integrated_gradients", target=top, steps=16)
    assert e.targets is None and e.labels == ["top"] * 3
    with torch.no_grad():
        out, base = model(x), model(torch.zeros_like(x))
    # completeness: attributions sum to f(x) - f(baseline) for the callable's scalar
    torch.testing.assert_close(e.attribution.sum(dim=(1, 2, 3)), top(out) - top(base), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("position", [None, (4, 5)])
def test_unit_target_explains_a_neuron(x, position):
    model = tiny_cnn()
    unit = ds.Unit("conv2", 3, position)
    e = ds.explain(model, x, method="saliency", target=unit)

    def score(m, t):
        acts = m.conv2(m.relu1(m.conv1(t)))[:, 3]
        return acts.mean(dim=(1, 2)) if position is None else acts[:, 4, 5]

    torch.testing.assert_close(e.attribution, manual_gradient(model, x, score))
    assert e.labels[0] == str(unit)


def test_unit_target_out_of_range(x):
    with pytest.raises(ds.TargetError, match="out of range"):
        ds.explain(tiny_cnn(), x, method="saliency", target=ds.Unit("conv2", 99))
    with pytest.raises(ds.LayerNotFoundError, match="conv2"):
        ds.explain(tiny_cnn(), x, method="saliency", target=ds.Unit("conv_2", 1))


def test_unit_target_for_gradcam_at_an_earlier_layer(x):
    e = ds.explain(tiny_cnn(), x, method="gradcam", layer="conv1", target=ds.Unit("conv3", 2))
    assert e.heatmap.abs().sum() > 0
    with pytest.raises(ds.TargetError, match="does not depend on layer"):
        ds.explain(tiny_cnn(), x, method="gradcam", layer="conv3", target=ds.Unit("conv1", 2))


def test_default_cam_layer_is_the_last_feature_map():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=4).eval()
    e = ds.explain(resnet, torch.randn(1, 3, 64, 64), method="gradcam")
    assert e.layer == "layer4"
    assert ds.explain(tiny_cnn(), torch.randn(1, 3, 16, 16), method="gradcam").layer == "relu3"


class SharedBlock(nn.Module):
    """One conv module applied twice in one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        first = torch.relu(self.block(x))
        second = torch.relu(self.block(first))
        return self.head((first * second).mean(dim=(2, 3)))


def manual_gradcam(model, x, which):
    outputs = []
    handle = model.block.register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    score = out.gather(1, out.argmax(1, keepdim=True)).sum()
    grads = torch.autograd.grad(score, outputs[which])[0]
    cam = (grads.mean(dim=(2, 3), keepdim=True) * outputs[which]).sum(1).clamp(min=0)
    return cam.detach()


def test_module_called_twice_warns_and_lets_the_user_choose(x):
    model = SharedBlock().eval()
    with pytest.warns(UserWarning, match="called 2 times"):
        last = ds.explain(model, x, method="gradcam", layer="block")
    first = ds.explain(model, x, method="gradcam", layer="block", call=0)
    torch.testing.assert_close(first.heatmap, manual_gradcam(model, x, 0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(last.heatmap, manual_gradcam(model, x, 1), rtol=1e-4, atol=1e-6)
    with pytest.raises(ds.BadInputError, match="called 2 time"):
        ds.explain(model, x, method="gradcam", layer="block", call=5)


def tiny_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts with a zero head: every gradient would be zero
    return model


def test_token_layer_is_read_on_its_grid_and_an_unreadable_one_says_what_to_pass():
    x = torch.randn(2, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    inferred = ds.explain(tiny_vit(), x, method="gradcam", layer=layer)
    torch.testing.assert_close(
        inferred.heatmap, ds.explain(tiny_vit(), x, method="gradcam", layer=layer, reshape=True).heatmap
    )

    class ThreeRegisters(nn.Module):
        """Patch tokens after three extra tokens: 19 tokens, which no grid with 0-2 leading tokens explains."""

        def __init__(self) -> None:
            super().__init__()
            self.patches = nn.Conv2d(3, 8, 8, stride=8)
            self.registers = nn.Parameter(torch.randn(1, 3, 8))
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            tokens = self.patches(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.registers.expand(len(x), -1, -1), tokens], dim=1)
            return self.head(self.norm(tokens).mean(dim=1))

    with pytest.raises(ds.BadInputError, match=r"\(2, 19, 8\).*reshape=<callable"):
        ds.explain(ThreeRegisters().eval(), x, method="gradcam", layer="norm")


def test_token_layer_with_reshape_agrees_with_pytorch_grad_cam():
    model, layer = tiny_vit(), "encoder.layers.encoder_layer_1.ln_1"
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    e = ds.explain(model, x, method="gradcam", layer=layer, reshape=True)
    assert e.heatmap.shape == (2, 32, 32)

    def to_grid(t):
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    classes = model(x).argmax(1)
    target_layer = dict(model.named_modules())[layer]
    with GradCAM(model=model, target_layers=[target_layer], reshape_transform=to_grid) as cam:
        expected = torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))
    for i in range(2):
        assert spearman(minmax(e.heatmap)[i], expected[i]) > 0.99
    custom = ds.explain(model, x, method="gradcam", layer=layer, reshape=to_grid)
    torch.testing.assert_close(custom.heatmap, e.heatmap)
