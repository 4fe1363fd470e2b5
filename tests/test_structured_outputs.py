"""Models whose output is not a plain tensor: the scores are found in a tuple, a dict or a Hugging Face
``ModelOutput`` (its ``logits``), or chosen with ``output=``; 0-d and ``(N,)`` outputs work with a callable target."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from conftest import ANY_MODEL_METHODS, explain_fast, hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.errors import BadInputError, TargetError


class ModelOutput(OrderedDict):
    """Mimics transformers' ModelOutput: an ordered dict (here with the hidden state before the logits)."""


class Structured(nn.Module):
    """TinyCNN's logits (N, 5) returned in the structure ``kind``, beside its (N, 16) pooled features."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.inner = tiny_cnn()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> object:
        features = self.features(x)
        logits = self.inner.fc(features)  # each layer runs once, as in TinyCNN's own forward
        if self.kind == "tensor":
            return logits
        if self.kind == "tuple":
            return (logits, x.mean())
        if self.kind == "dict":
            return {"loss": None, "logits": logits}
        if self.kind == "model_output":
            return ModelOutput(hidden_states=features, logits=logits)
        if self.kind == "features_first":  # the first tensor is not the logits: only output= finds them
            return (features, logits)
        if self.kind == "named_scores":
            return {"hidden": features, "scores": logits}
        if self.kind == "none":
            return {"loss": None}
        raise AssertionError(self.kind)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.inner
        h = inner.pool(inner.relu2(inner.conv2(inner.relu1(inner.conv1(x)))))
        return inner.gap(inner.relu3(inner.conv3(h))).flatten(1)


METHODS = {
    "saliency": {},
    "integrated_gradients": {},
    "gradcam": {"layer": "inner.conv3"},
    "occlusion": {},
}


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 16, 16)


def _same(a: ds.Explanation, b: ds.Explanation) -> None:
    torch.testing.assert_close(a.heatmap, b.heatmap, rtol=0, atol=0)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    if a.attribution is not None:
        torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind", ["tuple", "dict", "model_output"])
def test_structured_output_explains_as_its_logits(method, kind, x):
    reference = explain_fast(Structured("tensor").eval(), x, method, **METHODS[method])
    model = Structured(kind).eval()
    explanation = explain_fast(model, x, method, **METHODS[method])
    _same(explanation, reference)
    assert torch.equal(explanation.targets, reference.targets)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(
    ("kind", "output"),
    [("features_first", 1), ("features_first", lambda out: out[1]), ("named_scores", "scores")],
    ids=["index", "callable", "key"],
)
def test_output_option_chooses_the_scores(method, kind, output, x):
    reference = explain_fast(Structured("tensor").eval(), x, method, **METHODS[method])
    model = Structured(kind).eval()
    default = explain_fast(model, x, method, **METHODS[method])
    assert not torch.equal(default.heatmap, reference.heatmap)  # the first tensor is the features
    _same(explain_fast(model, x, method, output=output, **METHODS[method]), reference)


def test_output_option_reaches_smoothgrads_base(x):
    reference = explain_fast(Structured("tensor").eval(), x, "smoothgrad")
    _same(explain_fast(Structured("features_first").eval(), x, "smoothgrad", output=1), reference)


class Scalar(nn.Module):
    """One score for the whole batch (0-d), or one per input ((N,)) with ``per_input``."""

    def __init__(self, per_input: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(12.0).reshape(3, 2, 2))
        self.per_input = per_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = (x * self.weight).flatten(1).sum(dim=1)
        return scores if self.per_input else scores.sum()


SMALL = {"occlusion": {"window": 1, "stride": 1}}  # Scalar's inputs are 2 x 2


def test_0d_output_with_a_callable_target_for_a_batch_of_one():
    x = torch.randn(1, 3, 2, 2)
    explanation = ds.explain(Scalar(), x, "saliency", target=lambda out: out)
    # the score is sum(w * x): its gradient is w, the heatmap the largest |w| over channels
    torch.testing.assert_close(explanation.attribution[0], Scalar().weight.detach())
    torch.testing.assert_close(explanation.scores, (x[0] * Scalar().weight).sum().reshape(1).detach())


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_per_input_output_with_a_callable_target(method, x):
    explanation = explain_fast(
        Scalar(per_input=True), x[:, :, :2, :2], method, target=lambda out: out, **SMALL.get(method, {})
    )
    assert explanation.scores.shape == (2,)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion"])
@pytest.mark.parametrize("target", [None, 0])
@pytest.mark.parametrize("per_input", [True, False])
def test_class_target_on_a_score_output_says_what_to_pass(method, target, per_input):
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(TargetError, match=r"not \(N, classes\).*target=<callable.*output="):
        explain_fast(Scalar(per_input), x, method, target=target, **SMALL.get(method, {}))


@pytest.mark.parametrize(
    ("kind", "output", "message"),
    [
        ("named_scores", "logits", "not a key of the model's output; its keys: \\['hidden', 'scores'\\]"),
        ("features_first", 2, "output=2 is out of range: the model's output has 2 items"),
        ("features_first", "logits", "is a key, but the model returns a tuple"),
        ("named_scores", 0, "is an index, but the model returns a dict"),
        ("features_first", lambda out: out[1].tolist(), "returned a list, not a tensor"),
        ("features_first", 1.5, "not understood"),
        ("none", None, "holds no tensor to explain; pass output="),
        ("none", "loss", "output\\['loss'\\] is a NoneType, not a tensor"),
    ],
)
def test_bad_output_is_a_clear_error(kind, output, message, x):
    model = Structured(kind).eval()
    with pytest.raises(BadInputError, match=message):
        ds.explain(model, x, "saliency", output=output)
    assert hooks_left(model) == 0


def test_output_is_in_every_methods_description():
    assert "output=None" in ds.describe("saliency")


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_every_method_reads_output(method, x):
    reference = explain_fast(Structured("tensor").eval(), x, method)
    _same(explain_fast(Structured("features_first").eval(), x, method, output=1), reference)
