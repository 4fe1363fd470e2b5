"""Activation maximisation and deep dream: closed forms, objective arithmetic against manual hooks, the Fourier
parameterisation against its inverse (and Lucent's, where installed), the redirected ReLU, state restoration."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.features import channel, channels, dream, logit, maximize, neuron
from deepscope.features.maximize import NEUTRAL, Recipe, data_mean, model_input, redirect_relus
from deepscope.features.objectives import Objective, activation_norm, forward_until
from deepscope.features.param import (
    COLOR_CORRELATION,
    FourierImage,
    correlate_colors,
    decorrelate_colors,
    frequency_scale,
)
from deepscope.features.transforms import compose, jitter, pad, rotate, scale, standard_transforms
from deepscope.track.records import Image

FAST = {"progress": False}


def value(model: nn.Module, objective, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return objective(forward_until(model, images, objective.layers))


# Closed form -------------------------------------------------------------------------------------------------------


def test_plain_ascent_with_l2_decay_on_a_linear_logit_converges_to_the_closed_form():
    # The model sees (x - m) / s. Maximise w.(x - m) / s - decay / 2 ||x - m||^2 over x in [0, 1]^n (Simonyan et al.'s
    # L2 on the zero-centred image): x = clip(m + w / (s decay), 0, 1), around the data mean m, not mid grey.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    decay, m, s = 0.5, 0.3, 0.5
    w = model[1].weight.detach()[1].view(1, 1, 8, 8)
    expected = (m + w / (s * decay)).clamp(0, 1)
    assert 0 < (expected == 0).sum() < 64, "the bound should bind for some pixels only"
    result = maximize(
        model, logit(1), steps=100, start="zeros", preset="simonyan", size=8, channels=1, optimizer="sgd",
        lr=1 / (2 * decay), decay=decay, preprocess=lambda x: (x - m) / s, **FAST,
    )  # fmt: skip
    torch.testing.assert_close(result.images, expected, atol=1e-5, rtol=0)


def normalise(mean: tuple[float, ...], std: tuple[float, ...]):
    """A training normalisation ``(x - mean) / std`` per channel, as a preprocess."""
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x - m) / s


def test_l2_decay_measurably_shrinks_the_zero_centred_image():
    model = tiny_cnn()
    mean = (0.2, 0.5, 0.7)
    options = {"steps": 48, "size": 16, "preset": "simonyan", "preprocess": normalise(mean, (0.3, 0.3, 0.3))}
    distance = {}
    for decay in (0.0, 0.1):
        result = maximize(model, channel("relu2", 1), decay=decay, seed=3, **options, **FAST)
        distance[decay] = float((result.images - torch.tensor(mean).view(1, 3, 1, 1)).norm())
    # measured: 18.7 without decay, 0.67 with 0.1 (this channel's gradient per pixel is weak)
    assert distance[0.1] < 0.75 * distance[0.0], distance


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_zeros_start_is_the_data_mean_that_the_normalisation_maps_to_zero(param):
    model = tiny_cnn()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
    target = channel("relu2", 1)
    result = maximize(
        model, target, steps=1, start="zeros", param=param, transforms=(), preprocess=normalise(mean, std), size=16,
        **FAST,
    )  # fmt: skip
    mean_image = torch.tensor(mean).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    # the recorded score is the start image's: the model's input of zeros
    torch.testing.assert_close(result.history[0], value(model, target, torch.zeros(1, 3, 16, 16)), atol=1e-4, rtol=0)
    assert data_mean(normalise(mean, std), None, 3, (16, 16)).flatten().tolist() == pytest.approx(mean, abs=1e-6)
    assert data_mean(torchvision_normalize(mean, std), None, 3, (16, 16)).flatten().tolist() == pytest.approx(mean)
    resized = lambda x: nn.functional.interpolate(normalise(mean, std)(x), size=32)  # noqa: E731
    assert data_mean(resized, None, 3, (16, 16)).flatten().tolist() == pytest.approx(mean, abs=1e-6)
    assert data_mean(None, 0.3, 1, (16, 16)).item() == pytest.approx(0.3)  # mean= says it where preprocess can't
    assert data_mean(torch.sigmoid, None, 3, (16, 16)).flatten().tolist() == [NEUTRAL] * 3  # not affine: mid grey
    noise = maximize(model, target, steps=1, preset="simonyan", preprocess=normalise(mean, std), size=16, **FAST)
    assert abs(float((noise.images - mean_image).mean())) < 0.02  # "noise" is centred on the mean too


def torchvision_normalize(mean, std):
    transforms = pytest.importorskip("torchvision.transforms")
    return transforms.Normalize(mean, std)


def test_a_unit_off_at_the_start_gets_the_redirected_relu_with_a_warning():
    model = tiny_cnn()
    with torch.no_grad():  # off for the grey start, but on where a patch of pixels matches the kernel's signs
        weight = model.conv1.weight[4]
        grey = NEUTRAL * weight.sum()
        best = weight.clamp(min=0).sum()
        model.conv1.bias[4] = -(grey + 0.3 * (best - grey))
    target = channel("relu1", 4)
    start = torch.full((1, 3, 16, 16), NEUTRAL, requires_grad=True)
    (gradient,) = torch.autograd.grad(target(forward_until(model, start, target.layers)).sum(), start)
    assert gradient.abs().max() == 0, "the unit should be off, with no gradient, at the start"
    with pytest.warns(UserWarning, match=r"no gradient at the start for relu1\[4\].*redirect_relu=16"):
        result = maximize(model, target, steps=32, start="zeros", preset="simonyan", decay=0, size=16, lr=0.1, **FAST)
    assert result.history[0, 0] == 0 and result.scores[0] > 0, "the image should leave flat grey and turn the unit on"


def test_a_unit_that_stays_off_is_reported_not_shown_as_its_image():
    model = tiny_cnn()
    with torch.no_grad():
        model.conv1.bias[4] = -1e3  # dead for every image
    with pytest.warns(UserWarning) as caught:
        result = maximize(model, channel("relu1", 4), steps=24, start="zeros", preset="simonyan", size=16, **FAST)
    messages = " ".join(str(w.message) for w in caught)
    assert "no gradient at the start" in messages and "never changed in 24 steps" in messages
    assert (result.history == 0).all()


def test_channels_and_size_are_inferred_from_a_one_channel_28_pixel_model():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip
    assert model_input(cnn) == (1, None)
    result = maximize(cnn, logit(3), steps=4, preset="simonyan", **FAST)  # runs at 128? no: the Linear needs 28
    assert result.images.shape == (1, 1, 28, 28)
    # a convolutional unit runs at any size: the default one
    assert maximize(cnn, channel("3", 0), steps=2, preset="simonyan", **FAST).images.shape == (1, 1, 128, 128)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert model_input(mlp) == (1, 28)
    assert maximize(mlp, logit(0), steps=2, preset="simonyan", **FAST).images.shape == (1, 1, 28, 28)
    # Lucid's transforms pad the image, which a fixed-size model can't take: the error says so
    with pytest.raises(ds.BadInputError, match=r"transforms=\(\)"):
        maximize(cnn, logit(3), steps=2, **FAST)
    with pytest.raises(ds.BadInputError, match=r"3 channels, 28 x 28 pixels \(given\).*channels="):
        maximize(cnn, logit(3), steps=2, size=28, channels=3, preset="simonyan", **FAST)


# The objective rises and beats random images --------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["simonyan", "yosinski", "lucid"])
@pytest.mark.parametrize("target", [channel("relu2", 1), neuron("relu2", 3), neuron("relu3", 0)], ids=str)
def test_maximisation_rises_and_beats_random_images_of_the_same_norm(preset, target):
    model = tiny_cnn()
    # Lucid's recipe is made for hundreds of steps at 128+ px: a larger rate, and jitter in proportion to 24 px
    lucid = {"steps": 48, "size": 24, "lr": 0.2, "transforms": [pad(2), jitter(1), rotate([-5, 0, 5])]}
    # a channel mean of a 32 x 32 map in a tiny untrained net has weak gradients: the presets' decay (set for a trained
    # net's logits) would hold the image at the mean, so a weight in this objective's units
    options = lucid if preset == "lucid" else {"steps": 24, "size": 32, "decay": 1e-4}
    result = maximize(model, target, preset=preset, **options, **FAST)
    history = result.history[:, 0]
    assert history[-4:].mean() > 1.1 * history[:4].mean() + 1e-3
    if preset != "lucid":  # without random transforms the ascent is deterministic and rises almost every step
        assert (history[1:] >= history[:-1] - 1e-6).float().mean() > 0.6
    best = result.images
    noise = torch.randn(32, *best.shape[1:], generator=torch.Generator().manual_seed(1))
    norm = (best - NEUTRAL).flatten(1).norm(dim=1)
    random = (NEUTRAL + noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * norm).clamp(0, 1)
    assert value(model, target, best) > value(model, target, random).max()


def test_all_channels_of_a_layer_as_one_batch():
    model = tiny_cnn()
    with pytest.warns(UserWarning, match="no gradient at the start"):  # 3 of its channels are off on the start image
        result = maximize(model, channels("relu2"), steps=12, size=16, preset="simonyan", decay=0, **FAST)
    assert result.images.shape == (16, 3, 16, 16)
    assert result.labels == [f"relu2[{c}]" for c in range(16)]
    # no transforms in this preset, so the recorded objective is each image's own channel on the image before the step
    final = value(model, channels("relu2"), result.images)
    per_channel = torch.stack([value(model, channel("relu2", c), result.images[c : c + 1])[0] for c in range(16)])
    torch.testing.assert_close(final, per_channel)
    assert (final >= result.history[0] - 1e-6).all()


# Objectives compose -------------------------------------------------------------------------------------------------


def test_objectives_compose_like_sums_of_values_read_by_manual_hooks():
    model = tiny_cnn()
    x = torch.rand(3, 3, 16, 16)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.clone()))
        for name in ("relu1", "relu3")
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    manual = seen["relu1"][:, 2].mean((1, 2)) + 2 * seen["relu3"][:, 5, 1, 3] - out[:, 4] / 4 + 1
    combined = channel("relu1", 2) + 2 * neuron("relu3", 5, 1, 3) - logit(4) / 4 + 1
    torch.testing.assert_close(value(model, combined, x), manual)
    parts = [channel("relu1", 2), channel("relu1", 2)]
    torch.testing.assert_close(value(model, sum(parts), x), 2 * seen["relu1"][:, 2].mean((1, 2)))
    assert combined.layers == {"relu1", "relu3", ""}


def test_the_forward_pass_stops_at_the_target_layer():
    model = tiny_cnn()
    calls = {"conv2": 0, "conv3": 0, "fc": 0}
    handles = [
        getattr(model, name).register_forward_hook(lambda *_a, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in calls
    ]
    try:
        maximize(model, channel("relu2", 0), steps=3, size=16, **FAST)
        assert calls["conv2"] > 0 and calls["conv3"] == 0 and calls["fc"] == 0
        maximize(model, logit(0), steps=3, size=16, **FAST)
        assert calls["fc"] > 0
    finally:
        for handle in handles:
            handle.remove()


# Parameterisation and transforms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 15, 21), (2, 1, 12, 13)])
def test_fourier_image_round_trips_through_its_spectrum(shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    param = FourierImage.from_image(image)
    torch.testing.assert_close(param(), image, atol=1e-4, rtol=0)
    assert param.spectrum.shape == (*shape[:3], shape[3] // 2 + 1, 2)


def test_decorrelated_colours_are_invertible_and_images_stay_in_the_unit_range():
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(correlate_colors(decorrelate_colors(x)), x, atol=1e-5, rtol=0)
    assert COLOR_CORRELATION.norm(dim=0).max() == pytest.approx(1.0)
    loud = FourierImage.random((2, 3, 16, 16), sd=100.0, generator=torch.Generator().manual_seed(0), device="cpu")
    image = loud()
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.1


def test_fourier_parameterisation_matches_lucent():
    pytest.importorskip("lucent")
    from lucent.optvis.param.color import color_correlation_normalized, to_valid_rgb
    from lucent.optvis.param.spatial import fft_image

    torch.testing.assert_close(COLOR_CORRELATION, torch.as_tensor(color_correlation_normalized))
    params, lucent_image = fft_image((2, 3, 16, 16))
    ours = FourierImage.random((2, 3, 16, 16), sd=0.5, generator=torch.Generator().manual_seed(0), device="cpu")
    with torch.no_grad():
        params[0].copy_(ours.spectrum)
    lucent_rgb = to_valid_rgb(lucent_image, decorrelate=True)()
    torch.testing.assert_close(ours(), lucent_rgb, atol=1e-5, rtol=0)
    assert frequency_scale(16, 16).shape == (16, 9)


@pytest.mark.parametrize(
    "transform",
    [jitter(3), scale([0.9, 1.1]), rotate([-10, 10]), compose(standard_transforms()[1:])],
    ids=["jitter", "scale", "rotate", "standard stack"],  # stable names: xdist workers must collect the same ids
)
def test_transforms_keep_shape_and_device(transform):
    images = torch.rand(3, 3, 20, 20)
    out = transform(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.device == images.device and out.dtype == images.dtype
    assert pad(4)(images, torch.Generator()).shape == (3, 3, 28, 28)


def test_affine_transforms_are_exact_where_known():
    images = torch.rand(2, 1, 9, 9)
    generator = torch.Generator()
    identity = compose([jitter(0), scale([1.0]), rotate([0])])
    torch.testing.assert_close(identity(images, generator), images)
    quarter = rotate([90])(images, generator)
    torch.testing.assert_close(quarter, torch.rot90(images, k=1, dims=(-2, -1)), atol=1e-5, rtol=0)
    shifted = jitter(2)(images, torch.Generator().manual_seed(3))  # a whole-pixel shift of each image
    matches = [
        torch.allclose(shifted[0, 0, 2:-2, 2:-2], torch.roll(images[0, 0], (dy, dx), (0, 1))[2:-2, 2:-2], atol=1e-5)
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    ]
    assert sum(matches) == 1


# Redirected ReLU ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["modules", "functional", "inplace"])
def test_redirected_relu_reaches_a_dead_unit(kind):
    model = tiny_cnn(kind)
    with torch.no_grad():
        model.conv1.bias[4] = -1e3  # channel 4 of the first ReLU never fires
    target = channel("relu1", 4)
    if kind == "functional":  # no ReLU module to read: conv2's channel 0 copies the centre of ReLU channel 4
        target = channel("conv2", 0)
        with torch.no_grad():
            model.conv2.weight.zero_()
            model.conv2.bias.zero_()
            model.conv2.weight[0, 4, 1, 1] = 1.0
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    (plain,) = torch.autograd.grad(-target(forward_until(model, x, target.layers)).sum(), x)
    assert plain.abs().max() == 0
    with redirect_relus():
        scores = target(forward_until(model, x, target.layers))
        (redirected,) = torch.autograd.grad(-scores.sum(), x)  # the gradient of the loss, as maximize() takes it
    assert scores.item() == 0  # the forward pass is unchanged
    assert redirected.abs().max() > 0
    # a step down the redirected loss gradient raises the dead unit's pre-activation
    with torch.no_grad():
        before = model.conv1(x)[0, 4].mean()
        after = model.conv1(x - 0.1 * redirected.sign())[0, 4].mean()
    assert after > before


# State, records, figures -------------------------------------------------------------------------------------------


def test_model_state_and_hooks_are_restored_even_after_an_error():
    model = tiny_cnn().train()
    model.conv1.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    maximize(model, channel("relu2", 0), steps=2, size=16, **FAST)
    with pytest.raises(ZeroDivisionError):
        maximize(model, channel("relu2", 0) + Objective(_broken, ["relu2"], "broken"), steps=2, size=16, **FAST)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks for m in model.modules())


def _broken(activations):
    raise ZeroDivisionError("an objective that fails mid-run")


def test_results_render_and_log(tmp_path):
    model = tiny_cnn()
    result = maximize(model, channel("relu1", [0, 1, 2]), steps=2, size=16, **FAST)
    assert result.images.shape == (3, 3, 16, 16) and result.history.shape == (2, 3)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result._repr_png_().startswith(b"\x89PNG")
    records = result.to_records("maximize", step=5)
    assert [r.tag for r in records] == ["maximize/relu1[0]", "maximize/relu1[1]", "maximize/relu1[2]"]
    assert all(isinstance(r, Image) and r.pixels.shape == (16, 16, 3) and r.step == 5 for r in records)
    with ds.Run(tmp_path / "run") as run:
        run.log_records(records)


# Deep dream -----------------------------------------------------------------------------------------------------------


def test_dream_increases_the_layers_activation_norm():
    model = tiny_cnn()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    dreamt = dream(model, image, "relu2", steps=4, octaves=2, lr=0.03, **FAST)
    assert dreamt.shape == image.shape and dreamt.min() >= 0 and dreamt.max() <= 1
    norm = activation_norm("relu2")
    assert value(model, norm, dreamt[None]) > 1.5 * value(model, norm, image[None])
    assert all(not m._forward_hooks for m in model.modules())


# Bad input ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda m: maximize(m, channel("relu_2", 0), size=16, **FAST), ds.LayerNotFoundError, "relu2"),
        (lambda m: maximize(m, channel("relu2", 16), size=16, **FAST), ds.BadInputError, "16 channels"),
        (lambda m: maximize(m, neuron("relu2", 0, 99, 0), size=16, **FAST), ds.BadInputError, "outside"),
        (lambda m: maximize(m, logit(7), size=16, **FAST), ds.BadInputError, "5 classes"),
        (lambda m: maximize(m, 0, preset="olah", **FAST), ds.BadInputError, "'lucid'"),
        (lambda m: maximize(m, 0, param="wavelet", **FAST), ds.BadInputError, "'fourier'"),
        (lambda m: maximize(m, 0, blur=3, **FAST), ds.BadInputError, "blur_every"),
        (lambda m: maximize(m, 0, preset="lucid", blur_every=4, **FAST), ds.BadInputError, "param='pixel'"),
        (lambda m: maximize(m, 0, size=4, **FAST), ds.BadInputError, "too small"),
        (lambda m: maximize(m, 0, start=torch.full((3, 16, 16), 2.0), **FAST), ds.BadInputError, "[0, 1]"),
        (lambda m: maximize(m, 0, size=16, channels=1, **FAST), ds.BadInputError, "could not run"),
        (lambda m: maximize(m, 0, size=16, mean=(0.2, 0.4), **FAST), ds.BadInputError, "one per channel (3)"),
        (lambda m: maximize(m, 0, size=16, mean=1.5, **FAST), ds.BadInputError, "mean pixel in [0, 1]"),
        (lambda m: maximize(m, channels("relu2"), batch=3, size=16, **FAST), ds.BadInputError, "batch of 16"),
        (lambda m: maximize(m, "relu2", **FAST), ds.BadInputError, "not understood"),
        (lambda m: dream(m, torch.rand(3, 16, 16), "relu2", octaves=4, **FAST), ds.BadInputError, "octaves <="),
        (lambda m: dream(m, torch.rand(3, 16, 16), "relu9", **FAST), ds.LayerNotFoundError, "relu1"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, words):
    with pytest.raises(error, match=None) as caught:
        call(tiny_cnn())
    assert words in str(caught.value)


def test_a_recipe_can_be_passed_as_a_preset():
    model = tiny_cnn()
    recipe = Recipe(param="pixel", transforms=(), lr=0.1)
    result = maximize(model, channel("relu1", 1), steps=3, size=16, preset=recipe, **FAST)
    assert result.recipe == recipe
