"""Keras 3 models on the torch backend, explained by their Keras layer names; other backends refused clearly.

Every number is checked against Keras itself (a sub-model up to the layer) or a hand computation with torch autograd
on the Keras layers, in Keras' own channels-last layout. Skips when keras is not installed or already imported on
another backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import deepscope as ds
from deepscope import probe
from deepscope.errors import BadInputError, LayerNotFoundError
from deepscope.track.graph import model_graph


def _keras() -> Any:
    try:
        found = importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        pytest.skip("keras is not installed")
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")  # read once, at keras' first import
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()} in this process")
    return keras


def _cnn(keras: Any, size: tuple[int, int] = (10, 8)) -> Any:
    """conv (relu) -> features (relu) -> global average pooling -> 3 logits; seeded initialisers (no global seed)."""
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    return keras.Sequential(
        [
            keras.Input((*size, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv", kernel_initializer=init),
            keras.layers.Conv2D(5, 3, activation="relu", name="features", kernel_initializer=init),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(3, name="logits", kernel_initializer=init),
        ]
    )


def _images(size: tuple[int, int] = (10, 8), n: int = 3) -> torch.Tensor:
    return torch.rand(n, *size, 3, generator=torch.Generator().manual_seed(0))  # N, H, W, C: Keras' layout


def _hooks(model: Any) -> int:
    return sum(len(layer._forward_hooks) + len(layer._forward_pre_hooks) for layer in model.layers)


@pytest.mark.parametrize("layer", ["conv", "features"])
def test_gradcam_of_a_keras_cnn_is_the_hand_computation(layer: str) -> None:
    """Grad-CAM by hand in channels-last: the class score's gradient w.r.t. the layer's NHWC output (torch autograd
    through the Keras layers), averaged over H and W (axes 1, 2), weighs the channels (axis 3); ReLU; upsampled.
    A non-square input catches a swapped H/W, and a mean over the wrong axes gives other weights."""
    keras = _keras()
    model, x = _cnn(keras), _images()
    explanation = ds.explain(model, x, method="gradcam", layer=layer, target=[0, 1, 2])

    stop = [layer.name for layer in model.layers].index(layer) + 1
    activation = x
    for keras_layer in model.layers[:stop]:
        activation = keras_layer(activation)
    activation = activation.detach().requires_grad_(True)
    output = activation
    for keras_layer in model.layers[stop:]:
        output = keras_layer(output)
    score = output[torch.arange(3), torch.tensor([0, 1, 2])]
    (grad,) = torch.autograd.grad(score.sum(), activation)
    weights = grad.mean(dim=(1, 2), keepdim=True)  # N, 1, 1, C
    cam = (weights * activation.detach()).sum(dim=3).clamp(min=0)  # N, h, w
    expected = F.interpolate(cam[:, None], size=(10, 8), mode="bilinear", align_corners=False)[:, 0]

    assert explanation.heatmap.shape == (3, 10, 8)
    assert expected.abs().max() > 0  # a map that is not all zeros, so the comparison says something
    torch.testing.assert_close(explanation.heatmap, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explanation.inputs, x.permute(0, 3, 1, 2))  # results are channels first
    torch.testing.assert_close(explanation.scores, score.detach(), rtol=1e-5, atol=1e-6)
    assert _hooks(model) == 0


def test_keras_gradients_and_defaults() -> None:
    """Saliency's attribution is d(score)/d(input) in channels first; the default CAM layer is the last Keras conv."""
    keras = _keras()
    model, x = _cnn(keras), _images()
    saliency = ds.explain(model, x, method="saliency", target=1)
    inputs = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)
    torch.testing.assert_close(saliency.attribution, grad.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saliency.heatmap, grad.abs().amax(dim=3), rtol=1e-5, atol=1e-7)
    assert ds.explain(model, x, method="gradcam").layer == "features"
    assert _hooks(model) == 0


def test_a_wrong_keras_layer_name_lists_the_keras_names() -> None:
    keras = _keras()
    model = _cnn(keras)
    with pytest.raises(LayerNotFoundError, match=r"'feature'.*Closest names: features.*Keras layers' names"):
        ds.explain(model, _images(), method="gradcam", layer="feature")
    assert [name for name, _ in probe.torch_model(model).named_modules()] == ["", "conv", "features", "pool", "logits"]


def test_nested_keras_models_are_named_with_dots_and_keep_their_parameters() -> None:
    keras = _keras()
    inner = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c")], name="inner")
    inputs = keras.Input((6, 6, 2))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten(name="flat")(inner(inputs)))
    model = keras.Model(inputs, outputs)
    module = probe.torch_model(model)
    assert [name for name, _ in module.named_modules()] == ["", "inner", "inner.c", "flat", "head"]
    names = dict(module.named_parameters())
    assert names["inner.c.kernel"] is inner.layers[0].kernel.value  # Keras' own tensors, not copies
    assert set(names) == {"inner.c.kernel", "inner.c.bias", "head.kernel", "head.bias"}
    x = torch.rand(2, 6, 6, 2, generator=torch.Generator().manual_seed(1))
    features = ds.embed(model, x, layer="inner.c", pool="flatten", progress=False)
    expected = inner(x).permute(0, 3, 1, 2).flatten(1)  # channels first, like every deepscope result
    torch.testing.assert_close(features.features, expected.detach(), rtol=1e-5, atol=1e-6)


def test_embed_a_keras_layer_equals_a_keras_sub_model() -> None:
    keras = _keras()
    model, x = _cnn(keras), _images(n=5)
    labels = torch.tensor([0, 1, 2, 0, 1])
    features = ds.embed(model, (x, labels), layer="features", batch_size=2, progress=False)
    sub_model = keras.Model(model.inputs, model.get_layer("features").output)
    expected = sub_model(x).detach().mean(dim=(1, 2))  # global average over H, W of the NHWC map
    torch.testing.assert_close(features.features, expected, rtol=1e-5, atol=1e-6)
    assert features.labels.tolist() == labels.tolist()
    assert features.predictions.tolist() == model(x).argmax(dim=1).tolist()
    assert features.thumbnails.shape == (5, 10, 8, 3)
    assert _hooks(model) == 0


def test_channel_maximisation_of_a_keras_layer() -> None:
    """The first objective value is the channel's mean on the start image (Keras sub-model, NHWC); it grows."""
    keras = _keras()
    model = _cnn(keras, size=(12, 12))
    start = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = ds.maximize(model, ("conv", 2), steps=8, start=start, param="pixel", transforms=[], progress=False)
    sub_model = keras.Model(model.inputs, model.get_layer("conv").output)
    before = sub_model(start.permute(1, 2, 0)[None]).detach()[..., 2].mean()
    assert result.images.shape == (1, 3, 12, 12)
    assert result.history[0, 0].item() == pytest.approx(before.item(), rel=1e-5)
    after = sub_model(result.images.permute(0, 2, 3, 1)).detach()[..., 2].mean()
    assert after > before + 0.05
    assert all(w.value.requires_grad for w in model.trainable_weights)  # frozen for the run only


def test_keras_graph_names_layers_and_types() -> None:
    keras = _keras()
    model = _cnn(keras)
    graph = model_graph(model, _images(n=1))
    rows = {row["name"]: row for row in graph.modules}
    assert list(rows) == ["", "conv", "features", "pool", "logits"]
    assert [rows[n]["type"] for n in ("conv", "pool", "logits")] == ["Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert rows["conv"]["shape"] == [1, 4, 8, 6]  # channels first
    assert rows["conv"]["params"] == 3 * 3 * 3 * 4 + 4
    assert rows[""]["params"] == model.count_params()


@pytest.mark.parametrize("entry", ["explain", "embed", "maximize", "graph"])
def test_keras_on_tensorflow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    """A Keras model on another backend (simulated: Keras reports tensorflow) is refused with what works."""
    keras = _keras()
    model, x = _cnn(keras), _images(n=1)
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    calls = {
        "explain": lambda: ds.explain(model, x, method="gradcam", layer="conv"),
        "embed": lambda: ds.embed(model, x, layer="conv", progress=False),
        "maximize": lambda: ds.maximize(model, ("conv", 0), steps=1),
        "graph": lambda: model_graph(model, x),
    }
    with pytest.raises(BadInputError, match=r"tensorflow backend.*Keras 3 model on the torch backend.*KERAS_BACKEND"):
        calls[entry]()


def test_tf_keras_models_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """tf.keras (Keras 2) models are tf.Module objects: refused by name, without deepscope importing TensorFlow."""

    class Module:  # stands for tf.Module
        pass

    class Sequential(Module):
        pass

    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(Module=Module))
    with pytest.raises(BadInputError, match=r"Sequential is a Keras model on the tensorflow backend"):
        ds.explain(Sequential(), torch.rand(1, 3, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"must be a torch.nn.Module \(or a Keras 3 model"):
        ds.explain(object(), torch.rand(1, 3, 4, 4))  # type: ignore[arg-type]


def test_a_keras_model_object_serves_every_function_channels_first() -> None:
    """``KerasModel(model)`` takes ``[N, C, H, W]`` like any module: the same Grad-CAM as the Keras model given its
    own layout, and functions that take only modules (activation maps) read its Keras layers by name; given the Keras
    model itself, they say what to do."""
    keras = _keras()
    model, x = _cnn(keras), _images()
    module = probe.KerasModel(model)
    channels_first = x.permute(0, 3, 1, 2)
    torch.testing.assert_close(module(channels_first), model(x))
    direct = ds.explain(model, x, method="gradcam", layer="conv", target=1)
    wrapped = ds.explain(module, channels_first, method="gradcam", layer="conv", target=1)
    torch.testing.assert_close(wrapped.heatmap, direct.heatmap)
    maps = ds.activations(module, channels_first, layer="features").maps
    expected = keras.Model(model.inputs, model.get_layer("features").output)(x).detach().permute(0, 3, 1, 2)
    torch.testing.assert_close(maps, expected)
    with pytest.raises(BadInputError, match=r"Keras model.*KerasModel\(model\), with inputs channels first"):
        ds.activations(model, x, layer="features")


def test_inputs_a_keras_model_cannot_take_are_a_clear_error() -> None:
    """Images in the wrong layout: the error gives the shape Keras saw, its layout, what Keras said and expects."""
    keras = _keras()
    model = _cnn(keras)
    wrong = _images().permute(0, 3, 1, 2)  # channels first, for a channels-last model
    expected = r"\(3, 3, 10, 8\) \(its layout: N, H, W, C\): .*It expects \(None, 10, 8, 3\)"
    with pytest.raises(BadInputError, match=expected):
        ds.explain(model, wrong, method="gradcam", layer="conv")
    assert _hooks(model) == 0


def test_a_keras_model_with_two_inputs_runs_and_draws() -> None:
    """Several inputs go to Keras as its list; each in the model's own layout, moved channels first."""
    keras = _keras()
    image, extra = keras.Input((6, 5, 2)), keras.Input((3,))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3, name="conv")(image))
    model = keras.Model([image, extra], keras.layers.Dense(2, name="head")(keras.layers.Concatenate()([pooled, extra])))
    x, y = torch.rand(2, 6, 5, 2), torch.rand(2, 3)
    module = probe.KerasModel(model)
    torch.testing.assert_close(module(x.permute(0, 3, 1, 2), y), model([x, y]))
    rows = {row["name"]: row for row in model_graph(model, (x[:1], y[:1])).modules}
    assert rows["conv"]["shape"] == [1, 4, 4, 3] and rows["head"]["shape"] == [1, 2]


@pytest.mark.parametrize(("biases", "first_rule"), [(True, None), (False, "zbox")])
def test_lrp_applies_its_rules_to_the_keras_layers(biases: bool, first_rule: str | None) -> None:
    """The convolutions, matrix products and bias additions that Keras computes with torch functions get the rules
    of the torch layers: the same relevance as on a torch twin of the model. Keras adds a layer's bias after its
    product, so the bias takes its share at that sum: the same as the epsilon rule with the bias in ``z``, not as
    the z-box rule (whose ``z`` differs from the product's), hence no bias with z-box."""
    keras = _keras()
    model = _cnn(keras)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 3),
    ).eval()
    with torch.no_grad():
        for layer, name in ((twin[0], "conv"), (twin[2], "features"), (twin[6], "logits")):
            keras_bias = model.get_layer(name).weights[1]
            keras_bias.assign(torch.linspace(-0.3, 0.2, keras_bias.shape[0]))  # Keras starts biases at zero
            kernel, bias = (torch.as_tensor(w.value) for w in model.get_layer(name).weights)
            layer.weight.copy_(kernel.permute(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T)
            layer.bias.copy_(bias)
    x = _images()
    options = {"biases": biases, "first_rule": first_rule, "epsilon": 1e-9}  # the sum has its own epsilon
    ours = ds.explain(model, x, method="lrp", **options)
    expected = ds.explain(twin, x.movedim(-1, 1), method="lrp", **options)
    torch.testing.assert_close(ours.scores, expected.scores)
    torch.testing.assert_close(ours.attribution, expected.attribution, rtol=1e-4, atol=1e-6)
