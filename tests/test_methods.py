"""Properties every registered method must have, parametrised over the registry."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import ANY_MODEL_METHODS, TinyCNN, explain_fast, hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.base import method_class
from deepscope.explain.cam import CAMMethod

METHODS = ANY_MODEL_METHODS
LAYERED = [m for m in METHODS if method_class(m).layer_optional]  # explain the inputs, or a layer's output
CAM_FAMILY = {m for m in ds.methods() if issubclass(method_class(m), CAMMethod)}
NO_ATTRIBUTION = (CAM_FAMILY - {"guided_gradcam"}) | {"fullgrad"}  # a map, no attribution


def test_registry_lists_the_methods_of_the_brief():
    expected = {
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "guided_backprop",
        "deconvnet",
        "cam",
        "gradcam",
        "gradcam++",
        "scorecam",
        "guided_gradcam",
        "occlusion",
        "lime",
        "lrp",
        # issue 18: Captum's and pytorch-grad-cam's families, attention rollout
        "deeplift",
        "gradient_shap",
        "kernel_shap",
        "shapley_sampling",
        "feature_ablation",
        "hirescam",
        "xgradcam",
        "layercam",
        "eigencam",
        "ablationcam",
        "fullgrad",
        "attention_rollout",
    }
    assert expected <= set(ds.methods())


def _first_cells(page: str) -> set[str]:
    """The names in backticks in the first cell of each table row of a Markdown page."""
    text = (Path(__file__).resolve().parents[1] / page).read_text()
    cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def test_readme_and_explain_docs_list_every_registered_method():
    """The README's method table and docs/explain.md's tables (or, for a method with a section of its own, a
    ``method="..."`` call there) name every method of the registry."""
    explain_page = (Path(__file__).resolve().parents[1] / "docs" / "explain.md").read_text()
    readme, tables = _first_cells("README.md"), _first_cells("docs/explain.md")
    missing_readme = [m for m in ds.methods() if m not in readme]
    missing_docs = [m for m in ds.methods() if m not in tables and f'method="{m}"' not in explain_page]
    assert not missing_readme, f"README.md's method table lacks {missing_readme}"
    assert not missing_docs, f"docs/explain.md lacks {missing_docs}"


@pytest.mark.parametrize("method", METHODS)
def test_shapes_dtypes_and_devices(method, images):
    model = tiny_cnn()
    e = explain_fast(model, images, method)
    assert e.heatmap.shape == (3, 16, 16)
    assert e.heatmap.dtype == torch.float32 and e.heatmap.device.type == "cpu"
    assert torch.isfinite(e.heatmap).all()
    assert e.heatmap.abs().sum() > 0, "an all-zero map hides a failure"
    if method in NO_ATTRIBUTION:
        assert e.attribution is None
    else:
        assert e.attribution is not None and e.attribution.shape == images.shape
    predicted = model(images).argmax(1)
    assert torch.equal(e.targets, predicted)
    assert torch.allclose(e.scores, model(images).gather(1, predicted[:, None])[:, 0], atol=1e-5)
    assert e.method == method and repr(e).startswith("Explanation(")


@contextlib.contextmanager
def left_as_found(model: nn.Module, trainable: nn.Parameter) -> Iterator[None]:
    """The promises every path keeps: no hook left, modes, ``requires_grad`` flags (conv1 frozen, ``trainable`` not),
    no parameter gradient, the state unchanged. The model comes with conv1 frozen and fc in training mode."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    yield
    assert hooks_left(model) == 0
    assert [m.training for m in model.modules()] == modes
    assert not model.conv1.weight.requires_grad and trainable.requires_grad
    assert all(p.grad is None for p in model.parameters()), "no parameter gradient may be accumulated"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("method", METHODS)
def test_model_left_as_found(method, images):
    model = tiny_cnn(kind="inplace")
    model.conv1.weight.requires_grad_(False)
    model.fc.train()  # an odd mix of modes must survive too
    with left_as_found(model, model.conv2.weight):
        explain_fast(model, images, method)


@pytest.mark.parametrize("method", LAYERED)
def test_model_left_as_found_at_a_layer(method, images):
    """The layer path (gradient methods attributing to a layer's output) keeps the same promises."""
    model = tiny_cnn(kind="inplace")
    model.conv1.weight.requires_grad_(False)
    model.fc.train()
    with left_as_found(model, model.conv2.weight):
        e = explain_fast(model, images, method, layer="conv2")
        assert e.attribution.shape == (3, 16, 16, 16) and e.heatmap.shape == (3, 16, 16) and e.layer == "conv2"


@pytest.mark.parametrize("method", LAYERED)
def test_hooks_removed_when_an_error_is_raised_at_a_layer(method, images):
    model = tiny_cnn()

    def explode(_module, _inputs, _output):
        raise RuntimeError("boom inside the model")

    handle = model.conv3.register_forward_hook(explode)
    try:
        with pytest.raises((ds.BadInputError, RuntimeError)):
            explain_fast(model, images, method, layer="conv2")
    finally:
        handle.remove()
    assert hooks_left(model) == 0


@pytest.mark.parametrize("method", LAYERED)
def test_float16_and_autocast_at_a_layer(method, images):
    from conftest import spearman

    reference = explain_fast(tiny_cnn(), images, method, layer="conv2")
    half = explain_fast(tiny_cnn().half(), images.half(), method, layer="conv2")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = explain_fast(tiny_cnn(), images, method, layer="conv2")
    for e in (half, autocast):
        assert e.heatmap.dtype == torch.float32 and torch.isfinite(e.heatmap).all()
        assert spearman(e.heatmap, reference.heatmap) > 0.9


@pytest.mark.parametrize("method", LAYERED)
def test_batch_equals_one_by_one_at_a_layer(method, images):
    model = tiny_cnn()
    if method == "smoothgrad":
        pytest.skip("random samples are drawn for the whole batch at once")
    whole = explain_fast(model, images, method, layer="pool")
    single = explain_fast(model, images[1:2], method, layer="pool")
    torch.testing.assert_close(whole.attribution[1:2], single.attribution, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_hooks_removed_when_an_error_is_raised(method, images):
    model = tiny_cnn()

    def explode(_module, _inputs, _output):
        raise RuntimeError("boom inside the model")

    handle = model.conv3.register_forward_hook(explode)
    try:
        with pytest.raises((ds.BadInputError, RuntimeError)):
            explain_fast(model, images, method)
    finally:
        handle.remove()
    assert hooks_left(model) == 0


class SideInputCNN(TinyCNN):
    """TinyCNN with an optional second input (added to the pooled features) and a keyword gate on them."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.side = nn.Linear(4, 16)

    def forward(self, x, side=None, gate=None):
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        features = self.gap(self.relu3(self.conv3(h))).flatten(1)
        if side is not None:
            features = features + self.side(side)
        if gate is not None:
            features = features * gate
        return self.fc(features)


def _several_inputs_call(method, model, images):
    """Explain with several inputs and a per-input forward keyword; a method that takes one input tensor gets
    the images alone (still with the keyword)."""
    from deepscope.explain.base import method_class

    torch.manual_seed(2)
    side, gate = torch.randn(len(images), 4), torch.rand(len(images), 16)
    inputs = images if method_class(method).single_input_only else (images, side)
    head = {"head": "fc"} if method == "cam" else {}  # the last nn.Linear registered is the side input's
    return explain_fast(model, inputs, method, forward_kwargs={"gate": gate}, **head)


@pytest.mark.parametrize("method", METHODS)
def test_model_left_as_found_with_several_inputs_and_forward_kwargs(method, images):
    torch.manual_seed(0)
    model = SideInputCNN(inplace=True).eval()
    model.conv1.weight.requires_grad_(False)
    model.fc.train()
    with left_as_found(model, model.side.weight):
        _several_inputs_call(method, model, images)


@pytest.mark.parametrize("method", METHODS)
def test_hooks_removed_when_an_error_is_raised_with_several_inputs(method, images):
    torch.manual_seed(0)
    model = SideInputCNN().eval()

    def explode(_module, _inputs, _output):
        raise RuntimeError("boom inside the model")

    handle = model.conv3.register_forward_hook(explode)
    try:
        with pytest.raises((ds.BadInputError, RuntimeError)):
            _several_inputs_call(method, model, images)
    finally:
        handle.remove()
    assert hooks_left(model) == 0


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_by_one(method, images):
    """An input's explanation does not depend on the other inputs in its batch."""
    model = tiny_cnn()
    if method in {"smoothgrad", "lime"}:
        pytest.skip("random samples are drawn for the whole batch at once")
    options = {"baseline": 0.0} if method == "occlusion" else {}
    whole = explain_fast(model, images, method, **options)
    single = explain_fast(model, images[1:2], method, **options)
    torch.testing.assert_close(whole.heatmap[1:2], single.heatmap, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_functional_relu_model_gives_the_same_result(method, images):
    """A model calling F.relu/torch.relu/Tensor.relu is explained exactly like its nn.ReLU twin."""
    layer = {"layer": "conv3"} if method in CAM_FAMILY else {}
    modules = explain_fast(tiny_cnn("modules"), images, method, **layer)
    functional = explain_fast(tiny_cnn("functional"), images, method, **layer)
    torch.testing.assert_close(modules.heatmap, functional.heatmap, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_float16_inputs_and_model(method, images):
    model = tiny_cnn().half()
    e = explain_fast(model, images.half(), method)
    reference = explain_fast(tiny_cnn(), images, method)
    assert e.heatmap.dtype == torch.float32 and torch.isfinite(e.heatmap).all()
    from conftest import spearman

    assert spearman(e.heatmap, reference.heatmap) > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_autocast(method, images):
    model = tiny_cnn()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = explain_fast(model, images, method)
    assert torch.isfinite(e.heatmap).all() and e.heatmap.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_is_named(method, images):
    with pytest.raises(ds.BadInputError, match="no option 'bogus'"):
        ds.explain(tiny_cnn(), images, method=method, bogus=1)


@pytest.mark.parametrize("method", METHODS)
def test_describe_documents_every_option(method):
    from deepscope.explain.base import method_class

    text = ds.describe(method)
    assert method_class(method).options, f"{method} has no options to document"
    for option in method_class(method).options:
        assert f"  {option}=" in text


def test_training_mode_is_kept_and_warned_where_it_matters(images):
    model = nn.Sequential(tiny_cnn(), nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="training mode"):
        ds.explain(model, images, method="saliency")
    assert model.training and model[1].training
    plain = tiny_cnn().train()  # no dropout or batch norm: training mode changes nothing, so no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.explain(plain, images, method="saliency")


def test_feature_vectors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    for method in ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop", "lime"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain_fast(model, x, method)
        assert e.heatmap.shape == (4, 6) and e.attribution.shape == (4, 6)


def test_signals_1d():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    x = torch.randn(2, 2, 32)
    for method in ["saliency", "integrated_gradients", "gradcam", "cam"]:
        e = explain_fast(model, x, method)
        assert e.heatmap.shape == (2, 32)
