"""The CAM family (and every other method) on the vision transformers people bring: torchvision, timm and Hugging
Face ViT / DeiT / Swin / ConvNeXt, built from configs with random weights (no downloads).

The default layer must reach the head (a class-token ViT's final norm does not: its patch tokens never reach the
class-token head), token and channels-last outputs are read on their grid without ``reshape``, and the maps equal
pytorch-grad-cam's on the same layer with its documented reshape transforms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
import transformers
from conftest import ANY_MODEL_METHODS, FAST_OPTIONS, hooks_left, minmax, tiny_cnn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models.convnext import CNBlockConfig

import deepscope as ds
from deepscope.explain.base import method_class, warn_if_blank
from deepscope.explain.cam import CAMMethod

CAM_FAMILY = {m for m in ds.methods() if issubclass(method_class(m), CAMMethod)}
NO_ATTRIBUTION = (CAM_FAMILY - {"guided_gradcam"}) | {"fullgrad"}  # a map, no attribution


def torchvision_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision starts with a zero head (see the warning test)
    return model


def torchvision_swin() -> nn.Module:
    return torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=5
    )


def torchvision_convnext() -> nn.Module:
    return torchvision.models.convnext.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=5)


def timm_vit() -> nn.Module:
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        num_classes=5,
    )  # fmt: skip


def timm_vit_registers() -> nn.Module:
    """A class token and 4 register tokens before the 4x4 grid."""
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        num_classes=5, reg_tokens=4,
    )  # fmt: skip


def timm_swin() -> nn.Module:
    return timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=32, embed_dim=16, depths=(1, 1), num_heads=(2, 2),
        window_size=4, num_classes=5,
    )  # fmt: skip


def timm_convnext() -> nn.Module:
    return timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), num_classes=5)


SMALL = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def hf_vit() -> nn.Module:
    config = transformers.ViTConfig(**SMALL, intermediate_size=64, num_labels=5)
    return transformers.ViTForImageClassification(config)


def hf_deit() -> nn.Module:
    """DeiT with its distillation token: 2 + 16 tokens; the logits average the class and distillation heads."""
    config = transformers.DeiTConfig(**SMALL, intermediate_size=64, num_labels=5)
    return transformers.DeiTForImageClassificationWithTeacher(config)


def hf_swin() -> nn.Module:
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=5
    )
    return transformers.SwinForImageClassification(config)


def hf_convnext() -> nn.Module:
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
    return transformers.ConvNextForImageClassification(config)


def to_grid(skip: int, channels_last: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's reshape transforms (its vit/swin tutorials): drop ``skip`` leading tokens and lay the rest
    on a square grid, or permute a channels-last map."""

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if channels_last:
            return t.permute(0, 3, 1, 2)
        side = int((t.shape[1] - skip) ** 0.5)
        return t[:, skip:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


# name: (builder, input side, the default layer, pytorch-grad-cam's reshape transform for it)
MODELS: dict[str, tuple[Callable[[], nn.Module], int, str, Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "torchvision_vit": (torchvision_vit, 32, "encoder.layers.encoder_layer_1.ln_1", to_grid(1)),
    "torchvision_swin": (torchvision_swin, 32, "permute", None),
    "torchvision_convnext": (torchvision_convnext, 32, "features", None),
    "timm_vit": (timm_vit, 32, "blocks.1.norm1", to_grid(1)),
    "timm_vit_registers": (timm_vit_registers, 32, "blocks.1.norm1", to_grid(5)),
    "timm_swin": (timm_swin, 32, "norm", to_grid(0, channels_last=True)),
    "timm_convnext": (timm_convnext, 64, "stages", None),
    "hf_vit": (hf_vit, 32, "vit.layers.1.layernorm_before", to_grid(1)),
    "hf_deit": (hf_deit, 32, "deit.layers.1.layernorm_before", to_grid(2)),
    "hf_swin": (hf_swin, 32, "swin.layernorm", to_grid(0)),
    "hf_convnext": (hf_convnext, 32, "convnext.encoder.stages.1", None),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    make, side, _, _ = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    torch.manual_seed(1)
    return model, torch.randn(2, 3, side, side)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out["logits"]


def peer_gradcam(model: nn.Module, layer: str, x: torch.Tensor, reshape) -> torch.Tensor:
    """pytorch-grad-cam's Grad-CAM of the predicted classes at ``layer`` (its models must return a tensor)."""

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.inner(x)
            return out if isinstance(out, torch.Tensor) else out["logits"]

    classes = logits(model, x).argmax(1)
    target = dict(model.named_modules())[layer]
    with GradCAM(model=Logits(), target_layers=[target], reshape_transform=reshape) as cam:
        return torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))


@pytest.mark.parametrize("name", list(MODELS))
def test_default_layer_reaches_the_head_and_cam_maps_are_not_blank(name):
    model, x = build(name)
    expected_layer = MODELS[name][2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no all-zero map, no layer called twice
        for method in ["gradcam", "gradcam++", "scorecam"]:
            e = ds.explain(model, x, method=method, **FAST_OPTIONS.get(method, {}))
            assert e.layer == expected_layer
            assert e.heatmap.shape == (2, *x.shape[2:])
            assert (e.heatmap.flatten(1).abs().amax(dim=1) > 0).all(), f"{method}: an all-zero map"
    assert hooks_left(model) == 0


@pytest.mark.parametrize("name", [n for n, spec in MODELS.items() if spec[3] is not None or "convnext" in n])
def test_gradcam_equals_pytorch_grad_cam_on_the_default_layer(name):
    model, x = build(name)
    _, _, layer, reshape = MODELS[name]
    ours = ds.explain(model, x, method="gradcam")  # layout inferred: no reshape given
    expected = peer_gradcam(model, layer, x, reshape)
    assert (expected.flatten(1).amax(dim=1) > 0).all()
    # The peer scales each map to [0, 1] and resizes it like we do (bilinear, pixel centres).
    torch.testing.assert_close(minmax(ours.heatmap), expected, rtol=0, atol=2e-4)


def test_the_final_norm_of_a_class_token_vit_gives_a_blank_map_and_a_warning():
    """What the default used to be: the final norm's patch tokens never reach the class-token head."""
    model, x = build("torchvision_vit")
    with pytest.warns(UserWarning, match=r"all zeros for 2 of 2 input.*does not reach the target"):
        e = ds.explain(model, x, method="gradcam", layer="encoder.ln")
    assert e.heatmap.abs().max() == 0


@pytest.mark.parametrize("reshape", [None, True])
def test_channels_last_output_is_permuted(reshape):
    """torchvision's Swin stages output (N, H, W, C); read as channels first they would give nonsense."""
    model, x = build("torchvision_swin")
    e = ds.explain(model, x, method="gradcam", layer="features.3", reshape=reshape)
    expected = peer_gradcam(model, "features.3", x, to_grid(0, channels_last=True))
    torch.testing.assert_close(minmax(e.heatmap), expected, rtol=0, atol=2e-4)


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
@pytest.mark.parametrize("name", ["torchvision_vit", "timm_swin", "hf_deit", "torchvision_convnext"])
def test_every_method_answers_with_the_right_shapes(name, method):
    model, x = build(name)
    flags = [p.requires_grad for p in model.parameters()]
    options = FAST_OPTIONS.get(method, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            e = ds.explain(model, x, method=method, **options)
        except ds.BadInputError as error:
            # LRP may refuse layers it has no rule for (LayerNorm, attention), naming them.
            assert method == "lrp", error
            e = None
    if e is not None:
        assert e.heatmap.shape == (2, *x.shape[2:]) and torch.isfinite(e.heatmap).all()
        if method in NO_ATTRIBUTION:
            assert e.attribution is None
        else:
            assert e.attribution is not None and e.attribution.shape == x.shape
        torch.testing.assert_close(e.scores, logits(model, x).gather(1, e.targets[:, None])[:, 0])
    assert hooks_left(model) == 0
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())


FULL_SIZE = {
    "vit_b_16": (lambda: torchvision.models.vit_b_16(weights=None), 224, "encoder.layers.encoder_layer_11.ln_1"),
    "swin_t": (lambda: torchvision.models.swin_t(weights=None), 64, "permute"),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None), 64, "features"),
    "timm_vit_small_patch16_224": (
        lambda: timm.create_model("vit_small_patch16_224", pretrained=False, img_size=64),
        64,
        "blocks.11.norm1",
    ),
    "timm_swin_tiny_patch4_window7_224": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2),
        64,
        "norm",
    ),
    "timm_convnext_tiny": (lambda: timm.create_model("convnext_tiny", pretrained=False), 64, "stages"),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_architectures_get_a_default_layer_that_reaches_the_head(name):
    make, side, layer = FULL_SIZE[name]
    torch.manual_seed(0)
    model = make().eval()
    if name == "vit_b_16":
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision's zero head would make every map zero
    torch.manual_seed(1)
    x = torch.randn(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = ds.explain(model, x, method="gradcam")
    assert e.layer == layer
    assert e.heatmap.shape == (1, side, side) and e.heatmap.abs().max() > 0


def test_a_zero_head_warns_and_says_why():
    """torchvision's ViT starts with a zero head: every gradient is zero, and the maps say nothing."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    for method in ["saliency", "gradcam"]:
        with pytest.warns(UserWarning, match=rf"{method}: the heatmap is all zeros for 2 of 2 input.*zero head"):
            ds.explain(model, x, method=method)


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_blank_maps_warn_and_only_they(method, images):
    """A zero head: each method warns exactly when some input's heatmap is all zeros."""
    model = tiny_cnn()
    nn.init.zeros_(model.fc.weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = ds.explain(model, images, method=method, **FAST_OPTIONS.get(method, {}))
    blank = int((e.heatmap.flatten(1) == 0).all(dim=1).sum())
    said = [str(w.message) for w in caught if "all zeros" in str(w.message)]
    if blank:
        assert len(said) == 1 and said[0].startswith(f"{method}: the heatmap is all zeros for {blank} of 3 input(s)")
    else:
        assert said == []


def test_not_finite_maps_warn():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.warns(UserWarning, match="NaN or infinite values for 2 of 2 input"):
        ds.explain(model, torch.randn(2, 4), method="saliency", target=0)


def test_warn_if_blank_counts_per_input():
    from deepscope.explain.base import method_class

    heatmap = torch.ones(4, 3, 3)
    heatmap[1] = 0
    heatmap[3, 0, 0] = float("inf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_blank(method_class("lrp"), heatmap)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "NaN or infinite values for 1 of 4" in messages[0]
    assert "all zeros for 1 of 4" in messages[1] and "epsilon" in messages[1]


class GridTokens(nn.Module):
    """Patches of 10x8 pixels on 32x32 images: a 3x4 grid as 12 tokens, which a 4x3 grid would explain as well."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 8, kernel_size=(10, 8), stride=(10, 8))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.patches(x).flatten(2).transpose(1, 2)).mean(dim=1))


def test_an_ambiguous_token_count_lists_its_readings_and_a_callable_settles_it():
    torch.manual_seed(0)
    model, x = GridTokens().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(
        ds.BadInputError, match=r"reads as tokens on a 4x3 grid.* or as tokens on a 3x4 grid.*reshape=<callable"
    ):
        ds.explain(model, x, method="gradcam", layer="norm")
    with pytest.raises(ds.BadInputError, match="reshape=False reads"):
        ds.explain(model, x, method="gradcam", layer="norm", reshape=False)
    as_grid = ds.explain(
        model, x, method="gradcam", layer="norm", reshape=lambda t: t.unflatten(1, (3, 4)).movedim(-1, 1)
    )
    conv = ds.explain(model, x, method="gradcam", layer="patches")
    assert conv.layer == "patches" and ds.explain(model, x, method="gradcam").layer == "patches"
    assert as_grid.heatmap.shape == conv.heatmap.shape == (2, 32, 32)
    assert (as_grid.heatmap.flatten(1).amax(dim=1) > 0).all()
