"""Models with several inputs: ``ds.explain(model, (x1, x2, ...))``.

Checked three ways: against Captum on its own test models (``captum.testing.helpers.basic_models``), the same case
given to both; against numbers Captum's test suite writes out by hand (re-created here: its models, inputs and
expected values); and against the single-input explanation of a model that holds the other inputs itself.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from captum import attr as captum
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.testing.helpers.basic_models import (
    BasicModel2,
    BasicModel3,
    BasicModel4_MultiArgs,
    BasicModel6_MultiTensor,
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer_MultiInput,
    BasicModel_MultiLayer_TrueMultiInput,
)
from conftest import ANY_MODEL_METHODS, FAST_OPTIONS, TinyCNN, hooks_left
from torch import nn

import deepscope as ds
from deepscope.explain.base import method_class


class ImageAndMeta(TinyCNN):
    """TinyCNN whose pooled image features get a term from a metadata vector: ``model(image, meta)``."""

    def __init__(self) -> None:
        super().__init__()
        self.meta = nn.Linear(4, 16)

    def forward(self, x: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        features = self.gap(self.relu3(self.conv3(h))).flatten(1)
        return self.fc(features + self.meta(meta).relu())


class HoldingMeta(ImageAndMeta):
    """The same network holding the metadata itself, so it takes the image alone."""

    def __init__(self, model: ImageAndMeta, meta: torch.Tensor) -> None:
        super().__init__()
        self.load_state_dict(model.state_dict())
        self.held = meta
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.held)


def image_and_meta() -> ImageAndMeta:
    torch.manual_seed(0)
    return ImageAndMeta().eval()


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16), torch.randn(3, 4)


def _options(method: str) -> dict:
    options = dict(FAST_OPTIONS.get(method, {}))
    if method == "cam":
        options["head"] = "fc"  # the last nn.Linear registered is the metadata's
    if method == "occlusion":
        options["baseline"] = 0.0
    return options


def _explain(model, inputs, method, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, inputs, method=method, **{**_options(method), **options})


# Every method answers or says why it cannot ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_every_method_answers_per_input_or_refuses(method, pair):
    x, meta = pair
    model = image_and_meta()
    reason = method_class(method).single_input_only
    if reason:
        with pytest.raises(
            ds.BadInputError, match=re.escape(method) + " explains one input tensor.*" + re.escape(reason)
        ):
            _explain(model, (x, meta), method)
        assert hooks_left(model) == 0
        return
    e = _explain(model, (x, meta), method)
    assert isinstance(e, ds.MultiInputExplanation) and len(e) == 3
    assert isinstance(e.heatmap, tuple) and e.heatmap[0].shape == (3, 16, 16) and e.heatmap[1] is None
    assert torch.isfinite(e.heatmap[0]).all() and e.heatmap[0].abs().sum() > 0
    if e.attribution is not None:
        assert [tuple(a.shape) for a in e.attribution] == [(3, 3, 16, 16), (3, 4)]
        assert all(a.dtype == torch.float32 and a.device.type == "cpu" for a in e.attribution)
    with torch.no_grad():
        output = model(x, meta)
    assert torch.equal(e.targets, output.argmax(1))
    torch.testing.assert_close(e.scores, output.gather(1, e.targets[:, None])[:, 0])
    assert hooks_left(model) == 0


# The image's part equals the explanation of a model holding the metadata ------------------------------------------

# Methods whose image attribution does not depend on the metadata being an input too (gradients at the inputs,
# windows over the image with the metadata as it is, the layer methods' maps).
HOLDING = ["saliency", "input_x_gradient", "guided_backprop", "deconvnet", "occlusion", "gradcam", "gradcam++", "cam"]


@pytest.mark.parametrize("method", HOLDING)
def test_image_part_equals_a_model_holding_the_metadata(method, pair):
    x, meta = pair
    model = image_and_meta()
    both = _explain(model, (x, meta), method)
    for i in range(len(x)):  # one input at a time: the held metadata is one sample's (a batch of one)
        alone = _explain(HoldingMeta(model, meta[i : i + 1]), x[i : i + 1], method)
        torch.testing.assert_close(both.heatmap[0][i : i + 1], alone.heatmap, rtol=1e-4, atol=1e-6)
        if alone.attribution is not None:
            torch.testing.assert_close(both.attribution[0][i : i + 1], alone.attribution, rtol=1e-4, atol=1e-6)
    single = both.for_input(0)
    assert isinstance(single, ds.Explanation) and torch.equal(single.heatmap, both.heatmap[0])


def test_a_tuple_of_one_gives_tuples_equal_to_the_tensor(pair):
    x, _ = pair
    model = TinyCNN().eval()
    for method in ["saliency", "integrated_gradients", "occlusion", "lime", "smoothgrad", "gradcam"]:
        alone = _explain(model, x, method)
        one = _explain(model, (x,), method)
        assert isinstance(one.heatmap, tuple) and len(one.heatmap) == 1
        # (occlusion: the tensor runs incrementally, the tuple in whole passes, equal within float rounding)
        torch.testing.assert_close(one.heatmap[0], alone.heatmap, rtol=1e-4, atol=1e-5)
        if alone.attribution is not None:
            torch.testing.assert_close(one.attribution[0], alone.attribution, rtol=1e-4, atol=1e-5)


def test_smoothgrad_draws_noise_on_each_inputs_own_scale(pair):
    """noise is a fraction of each input's own value range (per sample): metadata 1000 times larger than the
    image gets noise on its own scale, not the image's."""
    x, meta = pair
    model = image_and_meta()
    big = meta * 1000
    noises: list[torch.Tensor] = []

    def record(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if m.shape[0] > 3:  # the noisy copies, sample-major; the clean pass has 3 rows
            noises.append((m - big.repeat(m.shape[0] // 3, 1)).reshape(-1, 3, 4).detach())
        return model(image, m / 1000)

    ds.explain(record, (x, big), "smoothgrad", samples=16, noise=0.2, seed=0)
    spread = torch.cat(noises).std(dim=(0, 2))
    expected = 0.2 * (big.amax(dim=1) - big.amin(dim=1))
    ratio = spread / expected
    assert bool(((ratio > 0.6) & (ratio < 1.5)).all()), ratio


def test_figure_overlay_and_repr(pair):
    x, meta = pair
    e = _explain(image_and_meta(), (x, meta), "saliency")
    assert repr(e) == "MultiInputExplanation(method='saliency', inputs=2, heatmap=((3, 16, 16), None))"
    assert e.overlay(1).size == e.for_input(0).overlay(1).size
    assert e.figure() is not None and len(e._repr_png_()) > 1000
    vector = e.for_input(1)  # a feature vector's map is its attribution, as when it is explained alone
    assert torch.equal(vector.heatmap, e.attribution[1])
    vectors = ds.explain(BasicModel2(), (torch.randn(2, 3), torch.randn(2, 3)), "saliency", target=0)
    with pytest.raises(ds.BadInputError, match="no input has spatial axes to draw"):
        vectors.figure()


# Bad input --------------------------------------------------------------------------------------------------------


def test_bad_several_inputs_are_clear_errors(pair):
    x, meta = pair
    model = image_and_meta()
    cases = [
        ((x, meta[:2]), {}, "different batch sizes"),
        ((x, meta.long()), {}, r"inputs\[1\] has dtype torch.int64"),
        ((x, meta.double()), {}, r"inputs\[1\] is torch.float64 but the model's parameters are torch.float32"),
        ((x, meta[0]), {}, r"inputs\[1\] has shape \(4,\)"),
        ((x, meta / 0), {}, r"inputs\[1\] contains NaN"),
        ((x, meta.numpy()), {}, r"inputs\[1\] must be a torch.Tensor"),
        ([x, meta], {}, "give several inputs as a tuple"),
        ((), {}, "empty tuple"),
        ((x, meta), {"method": "occlusion", "window": (4, 2, 1)}, "window is a tuple of 3 entries but there are 2"),
        ((x, meta), {"method": "integrated_gradients", "baseline": (0.0,)}, "baseline is a tuple of 1 entries"),
        ((x, meta), {"method": "lime", "segments": (torch.zeros(5, 5).long(), "grid")}, r"segments for inputs\[0\]"),
        ((x, meta), {"method": "occlusion", "data": x}, "data= .* takes one input tensor"),
    ]
    for inputs, options, message in cases:
        with pytest.raises(ds.BadInputError, match=message):
            ds.explain(model, inputs, **options)
    assert hooks_left(model) == 0


def test_layer_methods_need_an_input_with_spatial_axes():
    model = BasicModel_MultiLayer_TrueMultiInput()
    vectors = tuple(torch.rand(2, 3) for _ in range(3))
    with pytest.raises(ds.BadInputError, match="gradcam needs an input with spatial axes"):
        ds.explain(model, vectors, "gradcam", layer="m1.linear1", target=0)


# Captum's models, the same case given to both ---------------------------------------------------------------------


def _vectors(count: int, n: int = 3, seed: int = 4) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    return tuple(3 * torch.randn(n, 3) for _ in range(count))


def _assert_tuples_close(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...], **tolerance) -> None:
    assert len(ours) == len(theirs)
    assert any(b.abs().sum() > 0 for b in theirs), "an all-zero reference cannot tell right from wrong"
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.float(), **({"rtol": 1e-4, "atol": 1e-5} | tolerance))


def _identity(output: torch.Tensor) -> torch.Tensor:
    return output


def _captum_cases() -> dict[str, tuple]:
    """name: (model, inputs, target for Captum, target for us, our forward_args, our forward_kwargs, Captum's args)."""
    three = _vectors(3)
    two = _vectors(2)
    x4 = _vectors(1, seed=9)[0]
    divisors = 1.0 + torch.rand(3, 3)
    return {
        "model2": (BasicModel2(), two, 1, 1, (), {}, None),
        "model3": (BasicModel3(), two, 0, 0, (), {}, None),
        "model4_args": (BasicModel4_MultiArgs(), two, None, _identity, (divisors, 1), {}, (divisors, 1)),
        "model6": (BasicModel6_MultiTensor(), two, None, _identity, (), {}, None),
        "multilayer_scale": (BasicModel_MultiLayer_MultiInput(), three, 1, 1, (2,), {}, (2,)),
        "true_multi_x4": (BasicModel_MultiLayer_TrueMultiInput(), three, 0, 0, (), {"x4": x4}, (x4,)),
    }


CAPTUM_CASES = _captum_cases()


GRADIENT_PEERS = {
    "saliency": (captum.Saliency, {"abs": False}),
    "input_x_gradient": (captum.InputXGradient, {}),
    "guided_backprop": (captum.GuidedBackprop, {}),
    "deconvnet": (captum.Deconvolution, {}),
}
# Captum's ReLU rules reach nn.ReLU modules only; these models call F.relu, where its rules do nothing (ours apply).
FUNCTIONAL_RELU = {"model2", "model3", "model4_args", "model6"}


@pytest.mark.parametrize(
    ("case", "ours"),
    [
        (case, ours)
        for case in CAPTUM_CASES
        for ours in GRADIENT_PEERS
        if not (case in FUNCTIONAL_RELU and ours in {"guided_backprop", "deconvnet"})
    ],
)
def test_gradients_equal_captum(case, ours):
    model, inputs, peer_target, our_target, args, kwargs, peer_args = CAPTUM_CASES[case]
    peer, peer_options = GRADIENT_PEERS[ours]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = peer(model).attribute(inputs, target=peer_target, additional_forward_args=peer_args, **peer_options)
        e = ds.explain(model, inputs, ours, target=our_target, forward_args=args, forward_kwargs=kwargs)
    _assert_tuples_close(e.attribution, expected)


@pytest.mark.parametrize("case", list(CAPTUM_CASES))
@pytest.mark.parametrize("baseline", ["zero", "per_input", "per_sample"])
def test_integrated_gradients_equal_captum(case, baseline):
    model, inputs, peer_target, our_target, args, kwargs, peer_args = CAPTUM_CASES[case]
    torch.manual_seed(7)
    if baseline == "zero":
        ours, theirs = 0.0, None
    elif baseline == "per_input":  # one value per input, a number or a tensor shaped like one sample
        theirs = tuple(0.5 * j if j % 2 else -torch.rand(1, 3) for j in range(len(inputs)))
        ours = theirs
    else:  # a baseline per sample for every input
        theirs = tuple(torch.randn_like(x) for x in inputs)
        ours = theirs
    expected = captum.IntegratedGradients(model).attribute(
        inputs,
        baselines=theirs,
        target=peer_target,
        additional_forward_args=peer_args,
        n_steps=24,
        internal_batch_size=16,
    )
    e = ds.explain(
        model,
        inputs,
        "integrated_gradients",
        target=our_target,
        baseline=ours,
        steps=24,
        batch_size=16,
        forward_args=args,
        forward_kwargs=kwargs,
    )
    _assert_tuples_close(e.attribution, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("case", list(CAPTUM_CASES))
def test_occlusion_equals_captum(case):
    model, inputs, peer_target, our_target, args, kwargs, peer_args = CAPTUM_CASES[case]
    windows, strides = (2, 1, 3)[: len(inputs)], (1, 1, 2)[: len(inputs)]
    expected = captum.Occlusion(model).attribute(
        inputs,
        sliding_window_shapes=tuple((w,) for w in windows),
        strides=strides,
        baselines=tuple(0.25 * j for j in range(len(inputs))),
        target=peer_target,
        additional_forward_args=peer_args,
    )
    e = ds.explain(
        model,
        inputs,
        "occlusion",
        window=windows,
        stride=strides,
        baseline=tuple(0.25 * j for j in range(len(inputs))),
        target=our_target,
        forward_args=args,
        forward_kwargs=kwargs,
        batch_size=5,
    )
    _assert_tuples_close(e.attribution, expected)


def test_lime_with_feature_masks_equals_captum():
    """Ids shared across inputs are one feature (Captum's feature_mask). On a model that is linear around the
    samples, both least-squares fits recover the same coefficients, whatever the random draws."""
    model = BasicModel_MultiLayer_MultiInput()
    inputs = (torch.tensor([[20.0, 50.0, 30.0]]), torch.tensor([[0.0, 100.0, 0.0]]), torch.tensor([[2.0, 10.0, 3.0]]))
    masks = (torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 0, 0]]))
    baselines = (5.0, torch.tensor([[6.0, 7.0, 8.0]]), 4.0)  # every sample's sum stays on the linear side of the ReLUs
    expected = captum.Lime(model, interpretable_model=SkLearnLinearRegression()).attribute(
        inputs, baselines=baselines, target=0, additional_forward_args=(1,), feature_mask=masks, n_samples=60
    )
    e = ds.explain(
        model,
        inputs,
        "lime",
        target=0,
        forward_args=(1,),
        segments=masks,
        baseline=baselines,
        samples=60,
        ridge=0.0,
        seed=0,
    )
    _assert_tuples_close(e.attribution, expected, rtol=1e-3, atol=1e-2)
    # The model is 4 * (sum of the features) - 8 there: a feature's coefficient is 4 x its summed difference.
    assert e.attribution[2][0, 0] == pytest.approx(4 * (20 - 5 + 30 - 5 + 0 - 6 + 15 - 12), abs=1e-2)


def test_lime_default_segments_are_one_feature_per_element_of_a_vector():
    model = BasicModel_MultiLayer_MultiInput()
    inputs = (torch.tensor([[23.0, 0.0, 0.0]]), torch.tensor([[20.0, 0.0, 50.0]]), torch.tensor([[0.0, 100.0, 10.0]]))
    e = ds.explain(model, inputs, "lime", target=0, forward_args=(1,), baseline=3.0, samples=80, ridge=0.0, seed=0)
    expected = tuple(4 * (x - 3.0) for x in inputs)  # linear there too: each element its own feature
    _assert_tuples_close(e.attribution, expected, rtol=1e-3, atol=1e-2)


# Captum's hand-written expected numbers (tests/attr/test_occlusion.py), re-created --------------------------------


def _occlusion_inputs() -> tuple[torch.Tensor, ...]:
    return (
        torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
        torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
        torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]),
    )


def test_captum_occlusion_multi_input_with_windows():
    inputs = _occlusion_inputs()
    expected = (
        [[492.0, 492.0, 492.0], [400.0, 400.0, 400.0]],
        [[80.0, 200.0, 120.0], [0.0, 400.0, 0.0]],
        [[400.0, 420.0, 440.0], [48.0, 50.0, 52.0]],
    )
    model = BasicModel_MultiLayer_MultiInput()
    e = ds.explain(model, inputs, "occlusion", window=(3, 1, 2), stride=1, baseline=0.0, target=0, forward_args=(1,))
    _assert_tuples_close(e.attribution, tuple(torch.tensor(t) for t in expected))
    # The third input as an extra per-sample argument instead: the first input's numbers do not change.
    e = ds.explain(
        model,
        inputs[:2],
        "occlusion",
        window=(3, 1),
        stride=1,
        baseline=0.0,
        target=0,
        forward_args=(inputs[2], 1),
        batch_size=2,
    )
    _assert_tuples_close(e.attribution[:1], (torch.tensor(expected[0]),))


def test_captum_occlusion_multi_input_with_baselines():
    expected = (
        [[444.0, 444.0, 444.0], [328.0, 328.0, 328.0]],
        [[68.0, 188.0, 108.0], [-12.0, 388.0, -12.0]],
        [[368.0, 368.0, 24.0], [0.0, 0.0, -12.0]],
    )
    baselines = (torch.tensor([[1.0, 4, 7], [3.0, 6, 9]]), 3.0, torch.tensor([[4.0], [6]]))
    e = ds.explain(
        BasicModel_MultiLayer_MultiInput(),
        _occlusion_inputs(),
        "occlusion",
        window=(3, 1, 2),
        stride=(2, 1, 2),
        baseline=baselines,
        target=0,
        forward_args=(1,),
    )
    _assert_tuples_close(e.attribution, tuple(torch.tensor(t) for t in expected))


def test_captum_occlusion_two_images():
    image, ones = torch.arange(16, dtype=torch.float).view(1, 1, 4, 4), torch.ones((1, 1, 4, 4))
    model = BasicModel_ConvNet_One_Conv()
    e = ds.explain(model, (image, ones), "occlusion", window=4, baseline=0.0, target=0)
    _assert_tuples_close(e.attribution, (67 * torch.ones_like(image), 13 * torch.ones_like(ones)))
    e = ds.explain(
        model,
        (image, ones),
        "occlusion",
        window=((2, 3), (1, 2)),
        stride=((2, 1), (1, 2)),
        baseline=0.0,
        target=0,
        batch_size=3,
    )
    first = [[17.0, 17.0, 17.0, 17.0]] * 2 + [[64.0, 65.5, 65.5, 67.0]] * 2
    second = [[3.0, 3.0, 3.0, 3.0]] * 3 + [[0.0, 0.0, 0.0, 0.0]]
    _assert_tuples_close(e.attribution, (torch.tensor(first)[None, None], torch.tensor(second)[None, None]))
    assert e.heatmap[0].shape == (1, 4, 4) and e.heatmap[1].shape == (1, 4, 4)


def test_captum_occlusion_basic_model3():
    inputs = (torch.tensor([[-10.0], [3.0]]), torch.tensor([[-5.0], [1.0]]))
    e = ds.explain(BasicModel3(), inputs, "occlusion", window=1, baseline=0.0, target=_identity)
    _assert_tuples_close(e.attribution, (torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [-1.0]])))


def test_unit_targets_read_the_layer_with_several_inputs(pair):
    x, meta = pair
    model = image_and_meta()
    unit = ds.Unit("conv3", 2)
    both = _explain(model, (x, meta), "saliency", target=unit)
    alone = _explain(HoldingMeta(model, meta), x, "saliency", target=unit)
    torch.testing.assert_close(both.attribution[0], alone.attribution)
    assert torch.equal(both.attribution[1], torch.zeros_like(meta))  # the unit sits before the metadata join


def test_incremental_occlusion_falls_back_to_whole_passes(pair):
    x, meta = pair
    with pytest.warns(UserWarning, match="several inputs"):
        ds.explain(image_and_meta(), (x, meta), "occlusion", window=4, incremental=True)


@pytest.mark.parametrize(
    ("ours", "peer", "peer_options", "our_options"),
    [
        *[(name, peer, options, {}) for name, (peer, options) in GRADIENT_PEERS.items()],
        ("integrated_gradients", captum.IntegratedGradients, {"n_steps": 16}, {"steps": 16}),
    ],
)
def test_two_images_equal_captum(ours, peer, peer_options, our_options):
    """Captum's one-convolution network with its optional second image (nn.ReLU modules: Captum's rules apply)."""
    torch.manual_seed(3)
    # Values large enough that the convolution's biases (-50, -75) leave some units on.
    images = (4 + 4 * torch.rand(2, 1, 4, 4), 4 + 4 * torch.rand(2, 1, 4, 4))
    model = BasicModel_ConvNet_One_Conv()
    expected = peer(model).attribute(images, target=1, **peer_options)
    e = ds.explain(model, images, ours, target=1, **our_options)
    _assert_tuples_close(e.attribution, expected)
    assert all(a.abs().sum() > 0 for a in e.attribution)
    assert [tuple(m.shape) for m in e.heatmap] == [(2, 4, 4), (2, 4, 4)]
