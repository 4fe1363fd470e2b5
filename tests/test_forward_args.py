"""Extra forward arguments (``forward_args``, ``forward_kwargs``): they reach every forward call of every method, and
the per-input tensors among them are repeated with the inputs where a method runs several copies of a batch
(Captum's ``additional_forward_args``): explaining ``model(x, scale, mask=mask)`` equals explaining, input by input,
a model that holds that input's ``scale`` and ``mask`` itself."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum import attr as captum
from captum.testing.helpers.basic_models import BasicModel4_MultiArgs, BasicModel5_MultiArgs
from conftest import ANY_MODEL_METHODS, FAST_OPTIONS, TinyCNN, hooks_left

import deepscope as ds

METHODS = ANY_MODEL_METHODS
# Methods whose random samples are drawn for the whole batch: compared on a batch of one.
RANDOM = {"smoothgrad", "lime"}


class ScaledCNN(TinyCNN):
    """TinyCNN whose input is scaled per input and channel, and whose pooled features are masked per input."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x * scale)))))
        features = self.gap(self.relu3(self.conv3(h))).flatten(1)
        if mask is not None:
            features = features * mask
        return self.fc(features)


class Closed(ScaledCNN):
    """The same network holding one input's ``scale`` and ``mask`` (batch of one), so it takes ``x`` alone."""

    def __init__(self, model: ScaledCNN, scale: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.load_state_dict(model.state_dict())
        self.scale, self.mask = scale, mask
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.scale, mask=self.mask)


def scaled_cnn() -> ScaledCNN:
    torch.manual_seed(0)
    return ScaledCNN().eval()


@pytest.fixture
def case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    scale = 0.5 + torch.rand(3, 3, 1, 1)
    mask = (torch.rand(3, 16) > 0.3).float()
    return x, scale, mask


def _explain(model, x, method, **options):
    options = {**FAST_OPTIONS.get(method, {}), **options}
    if method == "occlusion":
        options.setdefault("baseline", 0.0)  # "mean" would be the batch's mean, which differs from one input's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method=method, **options)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_equals_the_model_holding_the_arguments(method, case):
    x, scale, mask = case
    model = scaled_cnn()
    n = 1 if method in RANDOM else len(x)
    got = _explain(model, x[:n], method, forward_args=(scale[:n],), forward_kwargs={"mask": mask[:n]})
    for i in range(n):
        closed = Closed(model, scale[i : i + 1], mask[i : i + 1])
        expected = _explain(closed, x[i : i + 1], method)
        torch.testing.assert_close(got.heatmap[i : i + 1], expected.heatmap, rtol=1e-4, atol=1e-5)
        if expected.attribution is not None:
            torch.testing.assert_close(got.attribution[i : i + 1], expected.attribution, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.scores[i : i + 1], expected.scores, rtol=1e-5, atol=1e-6)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion"])
def test_unit_targets_and_per_input_arguments(method, case):
    """A Unit target reads a layer inside the model: the arguments still reach every pass."""
    x, scale, mask = case
    model = scaled_cnn()
    unit = ds.Unit("conv3", 2)
    got = _explain(model, x, method, target=unit, forward_args=(scale,), forward_kwargs={"mask": mask})
    for i in range(len(x)):
        expected = _explain(Closed(model, scale[i : i + 1], mask[i : i + 1]), x[i : i + 1], method, target=unit)
        torch.testing.assert_close(got.attribution[i : i + 1], expected.attribution, rtol=1e-4, atol=1e-5)


def test_arguments_reach_the_model_unchanged(case):
    """Numbers, strings and tensors without the batch axis pass as they are, to every call."""
    x, _, _ = case
    seen: list[tuple] = []
    model = scaled_cnn()
    weight = torch.tensor([2.0])  # one value, no batch axis: never repeated

    def function(inputs, factor, tag, weight, mask=None):
        seen.append((inputs.shape[0], factor, tag, weight, mask))
        return model(inputs, weight * factor)

    ds.explain(function, x, "integrated_gradients", steps=4, forward_args=(1.5, "t", weight), forward_kwargs={})
    assert len(seen) > 1
    assert all(f == 1.5 and t == "t" and w is weight and m is None for _, f, t, w, m in seen)


def test_bad_forward_arguments_are_named(case):
    x, scale, _ = case
    model = scaled_cnn()
    with pytest.raises(ds.BadInputError, match="forward_args must be a tuple"):
        ds.explain(model, x, "saliency", forward_args=scale)
    with pytest.raises(ds.BadInputError, match="forward_kwargs must be a dict"):
        ds.explain(model, x, "saliency", forward_args=(scale,), forward_kwargs=[scale])
    with pytest.raises(ds.BadInputError, match="extra forward arguments"):
        ds.explain(model, x, "saliency", forward_args=(scale, scale, scale))
    assert hooks_left(model) == 0


def test_incremental_occlusion_falls_back_with_forward_arguments(case):
    x, scale, _ = case
    model = scaled_cnn()
    with pytest.warns(UserWarning, match="extra forward arguments"):
        ds.explain(model, x, "occlusion", window=4, incremental=True, forward_args=(scale,))


# Captum's models with additional forward arguments, the same case given to both -------------------------------------


def _multi_args_case() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    return 2 * torch.rand(4, 3) + 0.5, torch.rand(4, 3) - 0.5


@pytest.mark.parametrize(
    ("peer", "ours", "peer_options", "our_options"),
    [
        (captum.Saliency, "saliency", {"abs": False}, {}),
        (captum.IntegratedGradients, "integrated_gradients", {"n_steps": 20}, {"steps": 20}),
        (
            captum.Occlusion,
            "occlusion",
            {"sliding_window_shapes": (1,), "baselines": 0.0},
            {"window": 1, "stride": 1, "baseline": 0.0},
        ),
    ],
)
@pytest.mark.parametrize("kind", ["model4_per_input_tensor", "model4_number", "model5_list"])
def test_equals_captum_additional_forward_args(peer, ours, peer_options, our_options, kind):
    x1, x2 = _multi_args_case()
    if kind == "model4_per_input_tensor":
        model, args = (
            BasicModel4_MultiArgs(),
            (torch.tensor([[1.5, 2.0, 3.0]]).repeat(4, 1) + torch.arange(4.0)[:, None], 1),
        )
    elif kind == "model4_number":
        model, args = BasicModel4_MultiArgs(), (2.5, 2)
    else:
        model, args = BasicModel5_MultiArgs(), ([2, 3], 0)
    # The model's second input is an extra argument here (several inputs are tested elsewhere): per input, so
    # both libraries repeat it with the first input's copies.
    args = (x2, *args)
    inputs = x1[:, None] if ours == "occlusion" else x1  # occlusion slides over a signal [N, 1, L]
    forward = (lambda t, *a: model(t[:, 0], *a)) if ours == "occlusion" else model
    expected = peer(model).attribute(x1, additional_forward_args=args, **peer_options)
    got = ds.explain(forward, inputs, ours, target=lambda out: out, forward_args=args, **our_options)
    torch.testing.assert_close(got.attribution.reshape(x1.shape), expected, rtol=1e-4, atol=1e-5)
