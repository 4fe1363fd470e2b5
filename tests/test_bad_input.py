"""Bad input: a clear error before any work, naming what was wrong and how to fix it, and no hook left behind."""

from __future__ import annotations

import pytest
import torch
from conftest import ANY_MODEL_METHODS, hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.base import method_class


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 3, 16, 16)


CASES = {
    "wrong shape": (lambda x: torch.randn(2, 5, 16, 16), {}, "could not run on inputs of shape \\(\\d, 5, 16, 16\\)"),
    "integer dtype": (lambda x: (x * 10).long(), {}, "floating-point"),
    "float64 against float32": (lambda x: x.double(), {}, "float64 but the model's parameters are torch.float32"),
    "NaN": (lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), {}, "NaN or infinite"),
    "infinite": (lambda x: x / 0, {}, "NaN or infinite"),
    "empty batch": (lambda x: x[:0], {}, "empty batch"),
    "no batch axis": (lambda x: x[0, 0, 0], {}, "leading N axis"),
    "not a tensor": (lambda x: x.numpy(), {}, "must be a torch.Tensor"),
    "target out of range": (lambda x: x, {"target": 7}, "target 7 is out of range: the model has 5 outputs"),
    "negative target": (lambda x: x, {"target": -1}, "out of range"),
    "fewer targets than inputs": (lambda x: x, {"target": [1]}, "1 targets given for 2 inputs"),
    "float targets": (lambda x: x, {"target": torch.tensor([0.5, 1.0])}, "class targets are integers"),
    "callable not one scalar per input": (lambda x: x, {"target": lambda out: out}, "one scalar per input"),
    "unknown target type": (lambda x: x, {"target": "cat"}, "not understood"),
}


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error(case, method, x):
    make, kwargs, message = CASES[case]
    model = tiny_cnn()
    with pytest.raises(ds.DeepscopeError, match=message):
        ds.explain(model, make(x.clone()), method=method, **kwargs)
    assert hooks_left(model) == 0


def test_unknown_method_lists_close_names(x):
    with pytest.raises(ds.BadInputError, match="Did you mean gradcam"):
        ds.explain(tiny_cnn(), x, method="gradcm")


def test_wrong_layer_lists_close_names(x):
    with pytest.raises(ds.LayerNotFoundError, match="Closest names: conv3") as info:
        ds.explain(tiny_cnn(), x, method="gradcam", layer="conv33")
    assert "named_modules" in str(info.value)


def test_layer_without_spatial_output_for_cam(x):
    with pytest.raises(ds.BadInputError, match="no spatial axes"):
        ds.explain(tiny_cnn(), x, method="gradcam", layer="fc")


@pytest.mark.parametrize("method", [m for m in ANY_MODEL_METHODS if not method_class(m).uses_layer])
def test_layer_given_to_a_method_without_layers(x, method):
    with pytest.raises(ds.BadInputError, match="does not use a layer"):
        ds.explain(tiny_cnn(), x, method=method, layer="conv3")


def test_model_that_is_not_a_module(x):
    with pytest.raises(ds.BadInputError, match=r"torch\.nn\.Module"):
        ds.explain("resnet18", x, method="saliency")
    with pytest.raises(ds.BadInputError, match=r"gradcam hooks the model's modules.*torch\.nn\.Module"):
        ds.explain(lambda t: t, x, method="gradcam")


def test_cam_needs_spatial_inputs():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.raises(ds.BadInputError, match="spatial axes"):
        ds.explain(model, torch.randn(2, 4), method="gradcam")


def test_cam_without_conv_layer_says_so():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    with pytest.raises(ds.BadInputError, match="no convolutional feature map"):
        ds.explain(model, torch.randn(2, 3, 4, 4), method="gradcam")


def test_cam_layer_that_does_not_feed_the_head(x):
    with pytest.raises(ds.BadInputError, match="channels but the head takes"):
        ds.explain(tiny_cnn(), x, method="cam", layer="conv1")


def test_bad_option_values(x):
    model = tiny_cnn()
    with pytest.raises(ds.BadInputError, match="reduce="):
        ds.explain(model, x, method="saliency", reduce="median")
    with pytest.raises(ds.BadInputError, match="baseline="):
        ds.explain(model, x, method="integrated_gradients", baseline="black")
    with pytest.raises(ds.BadInputError, match="does not broadcast"):
        ds.explain(model, x, method="integrated_gradients", baseline=torch.zeros(5, 5))
    with pytest.raises(ds.BadInputError, match="cannot average"):
        ds.explain(model, x, method="smoothgrad", base="gradcam")
    with pytest.raises(ds.BadInputError, match="steps=0 must be an integer of at least 1"):
        ds.explain(model, x, method="integrated_gradients", steps=0)
    with pytest.raises(ds.BadInputError, match="samples=1 must be an integer of at least 2"):
        ds.explain(model, x, method="lime", samples=1)
    with pytest.raises(ds.BadInputError, match=r"batch_size=2\.5"):
        ds.explain(model, x, method="scorecam", batch_size=2.5)
    assert hooks_left(model) == 0
