"""One target vocabulary: the same object scores the same in explain, maximize and the evaluation calls.

Classes, probabilities, callables, ``ds.Unit`` and the maximize objectives are all targets of
``deepscope.targets``; these tests hold each kind against a direct computation on the model, against the other
calls, and (for composition) against the closed form on a small linear model.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import ANY_MODEL_METHODS, explain_fast, hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.features.maximize import maximize
from deepscope.targets import Target, channel, channels, logit, neuron, probability


def _activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tiny CNN's layers by hand: conv2's output and the logits."""
    conv2 = model.conv2(model.relu1(model.conv1(x)))
    return {"conv2": conv2, "": model(x)}


def _by_hand(name: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What each target of TARGETS scores, computed from the layers directly."""
    a = _activations(model, x)
    return {
        "class": a[""][:, 2],
        "probability": a[""].softmax(dim=1)[:, 2],
        "callable": a[""][:, 0] - a[""][:, 1],
        "unit": a["conv2"][:, 3].mean(dim=(1, 2)),
        "unit position": a["conv2"][:, 3, 4, 5],
        "unit map": 0.5 * a["conv2"][:, 3].pow(2).sum(dim=(1, 2)),
        "channel": a["conv2"][:, 3].mean(dim=(1, 2)),
        "neuron": a["conv2"][:, 3, 4, 5],
        "sum": a[""][:, 2] - 0.5 * a["conv2"][:, 3].mean(dim=(1, 2)) + 1.0,
        "probability difference": a[""].softmax(dim=1)[:, 2] - a[""].softmax(dim=1)[:, 4],
    }[name]


def difference(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0] - out[:, 1]


TARGETS = {
    "class": 2,
    "probability": probability(2),
    "callable": difference,
    "unit": ds.Unit("conv2", 3),
    "unit position": ds.Unit("conv2", 3, (4, 5)),
    "unit map": ds.Unit("conv2", 3, signal="map"),
    "channel": channel("conv2", 3),
    "neuron": neuron("conv2", 3, 4, 5),
    "sum": logit(2) - 0.5 * ds.Unit("conv2", 3) + 1.0,
    "probability difference": probability(2) - probability(4),
}


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize("name", list(TARGETS))
def test_one_target_scores_alike_in_explain_maximize_and_faithfulness(name, x):
    model, target = tiny_cnn(), TARGETS[name]
    with torch.no_grad():
        expected = _by_hand(name, model, x)
    explained = ds.explain(model, x, method="saliency", target=target)
    torch.testing.assert_close(explained.scores, expected)
    # maximize's objective at step 0 is the start image's score: the same number explain gives for it
    for i in range(len(x)):
        result = maximize(
            model, target, steps=1, start=x[i], preset="simonyan", transforms=(), size=None, progress=False
        )
        torch.testing.assert_close(result.history[0], expected[i : i + 1])
    # deletion's first point is the clean input's score (probability=False: the target as given)
    curves = ds.faithfulness(model, x, explained, target=target, steps=4, probability=False).curves
    torch.testing.assert_close(curves[:, 0], expected)
    assert hooks_left(model) == 0


def test_a_target_object_and_its_maximize_objective_have_the_same_gradient(x):
    model = tiny_cnn()
    for target, objective in [(ds.Unit("conv2", 3), channel("conv2", 3)), (2, logit(2))]:
        a = ds.explain(model, x, method="saliency", target=target)
        b = ds.explain(model, x, method="saliency", target=objective)
        torch.testing.assert_close(a.attribution, b.attribution)
    neuron_unit = ds.explain(model, x, method="saliency", target=ds.Unit("conv2", 3, (4, 5)))
    neuron_objective = ds.explain(model, x, method="saliency", target=neuron("conv2", 3, 4, 5))
    torch.testing.assert_close(neuron_unit.attribution, neuron_objective.attribution)
    # and they drive maximize alike
    kwargs = {"steps": 3, "size": 16, "preset": "simonyan", "transforms": (), "progress": False}
    torch.testing.assert_close(
        maximize(model, ds.Unit("conv2", 3), **kwargs).history, maximize(model, channel("conv2", 3), **kwargs).history
    )


def test_probability_is_the_softmax_of_the_logits(x):
    model = tiny_cnn()
    with torch.no_grad():
        p = model(x).softmax(dim=1)
    predicted = ds.explain(model, x, method="saliency", target=ds.probability(None))
    assert predicted.targets.tolist() == p.argmax(dim=1).tolist()
    torch.testing.assert_close(predicted.scores, p.max(dim=1).values)
    per_input = ds.explain(model, x, method="integrated_gradients", target=ds.probability([1, 3]), steps=8)
    torch.testing.assert_close(per_input.scores, p[[0, 1], [1, 3]])
    assert per_input.targets.tolist() == [1, 3]
    # its gradient is the softmax's: d p_c / d logits = p_c (e_c - p), through the model
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).softmax(dim=1)[:, 3].sum(), xg)
    e = ds.explain(model, x, method="input_x_gradient", target=ds.probability(3))
    torch.testing.assert_close(e.attribution, x * grad)


@pytest.mark.parametrize("incremental", [False, True])
def test_occlusion_probability_alias_is_the_probability_target_and_warns(x, incremental):
    model = tiny_cnn()
    options = {"window": 4, "stride": 4, "baseline": 0.0, "incremental": incremental}
    with pytest.warns(DeprecationWarning, match=r"target=ds\.probability\(target\)"):
        old = ds.explain(model, x, method="occlusion", target=2, probability=True, **options)
    new = ds.explain(model, x, method="occlusion", target=ds.probability(2), **options)
    torch.testing.assert_close(old.attribution, new.attribution)
    torch.testing.assert_close(old.scores, new.scores)
    # the numbers: mean drop of softmax probability over the windows covering each element (disjoint windows)
    with torch.no_grad():
        clean = model(x).softmax(dim=1)[:, 2]
        expected = torch.zeros(2, 16, 16)
        for top in range(0, 16, 4):
            for left in range(0, 16, 4):
                hidden = x.clone()
                hidden[:, :, top : top + 4, left : left + 4] = 0.0
                drop = clean - model(hidden).softmax(dim=1)[:, 2]
                expected[:, top : top + 4, left : left + 4] = drop[:, None, None]
    torch.testing.assert_close(new.heatmap, expected, atol=1e-5, rtol=0)


def test_composition_is_the_sum_of_gradients_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4)).eval()
    x = torch.randn(3, 6)
    w_hidden, w_out = model[0].weight.detach(), model[1].weight.detach()
    combined = logit(1) + 0.5 * channel("0", 2) - ds.Unit("0", 4) / 4
    e = ds.explain(model, x, method="input_x_gradient", target=combined)
    gradient = (w_out @ w_hidden)[1] + 0.5 * w_hidden[2] - w_hidden[4] / 4  # closed form: the weights' sum
    torch.testing.assert_close(e.attribution, x * gradient)
    parts = [ds.explain(model, x, method="input_x_gradient", target=t).attribution for t in (1, channel("0", 2))]
    parts.append(ds.explain(model, x, method="input_x_gradient", target=ds.Unit("0", 4)).attribution)
    torch.testing.assert_close(e.attribution, parts[0] + 0.5 * parts[1] - parts[2] / 4)
    with torch.no_grad():
        hidden = model[0](x)
        expected = model(x)[:, 1] + 0.5 * hidden[:, 2] - hidden[:, 4] / 4
    torch.testing.assert_close(e.scores, expected)
    # integrated gradients of a linear target: completeness, to the composed score
    ig = ds.explain(model, x, method="integrated_gradients", target=combined, baseline=0.0, steps=4)
    with torch.no_grad():
        zero = Target(combined, 3).scores(model(torch.zeros(3, 6)), activations={"0": model[0](torch.zeros(3, 6))})
    torch.testing.assert_close(ig.attribution.sum(dim=1), expected - zero)


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_a_composed_layer_target_is_explained_or_refused_clearly(method, x):
    """Every method either explains ``logit + channel`` (scores equal to the target's) or says why not."""
    model = tiny_cnn()
    target = logit(1) + 0.5 * channel("conv3", 2)
    try:
        e = explain_fast(model, x, method, target=target)
    except ds.TargetError as error:
        assert "class" in str(error) or "capture" in str(error), str(error)
    else:
        with torch.no_grad():
            below = model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x)))))
            expected = model(x)[:, 1] + 0.5 * model.conv3(below)[:, 2].mean(dim=(1, 2))
        torch.testing.assert_close(e.scores, expected)
        assert e.labels == [target.name] * len(x) and e.targets is None
    assert hooks_left(model) == 0


def test_per_input_and_batch_objectives_map_rows_to_inputs(x):
    model = tiny_cnn()
    with torch.no_grad():
        conv2 = _activations(model, x)["conv2"]
    e = ds.explain(model, x, method="integrated_gradients", target=channel("conv2", [5, 9]), steps=4)
    torch.testing.assert_close(e.scores, conv2[[0, 1], [5, 9]].mean(dim=(1, 2)))
    assert e.labels == ["conv2[5]", "conv2[9]"]
    x16 = torch.rand(16, 3, 8, 8)
    every = ds.explain(model, x16, method="saliency", target=channels("conv2"))
    with torch.no_grad():
        per = _activations(model, x16)["conv2"]
    torch.testing.assert_close(every.scores, per[range(16), range(16)].mean(dim=(1, 2)))
    with pytest.raises(ds.TargetError, match="16 inputs"):
        ds.explain(model, x, method="saliency", target=channels("conv2"))


def test_bad_targets_are_clear_errors(x):
    model = tiny_cnn()
    with pytest.raises(ds.LayerNotFoundError, match="conv2"):
        ds.explain(model, x, method="saliency", target=channel("conv_2", 1))
    with pytest.raises(ds.TargetError, match=r"channel 40 is out of range: layer 'conv2' has 16 channels \(0\.\.15\)"):
        ds.explain(model, x, method="saliency", target=logit(0) + channel("conv2", 40))
    with pytest.raises(ds.TargetError, match=r"target 9 is out of range.*5 classes \(0\.\.4\)"):
        maximize(model, ds.probability(9), steps=1, size=16, progress=False)
    with pytest.raises(ds.TargetError, match="predicted class"):
        maximize(model, ds.probability(None), steps=1, size=16, progress=False)
    with pytest.raises(ds.TargetError, match="no softmax"):
        ds.probability(ds.Unit("conv2", 1))
    with pytest.raises(ds.TargetError, match="class"):
        ds.explain(model, x, method="cam", target=logit(1) - logit(2))
    with pytest.raises(ds.TargetError, match="capture"):
        explain_fast(model, x, "scorecam", target=channel("conv2", 1))


def test_sanity_freezes_a_predicted_probability_on_the_trained_model(x):
    model = tiny_cnn()
    resolved = Target(ds.probability(None), len(x))
    with torch.no_grad():
        resolved.bind(model(x))
    frozen = Target(resolved.frozen(), len(x))
    assert not frozen.needs_prediction and frozen.classes.tolist() == model(x).argmax(1).tolist()
    other = tiny_cnn(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(frozen.scores(other(x)), other(x).softmax(1)[range(len(x)), resolved.classes])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = ds.sanity_check(model, x, methods=["saliency"], target=ds.probability(None))
    assert check.targets.tolist() == model(x).argmax(1).tolist()


def test_a_function_model_takes_output_targets_and_refuses_layer_targets(x):
    model = tiny_cnn()
    function = ds.explain(lambda batch: model(batch), x, method="saliency", target=ds.probability(1) - logit(2))
    module = ds.explain(model, x, method="saliency", target=ds.probability(1) - logit(2))
    torch.testing.assert_close(function.attribution, module.attribution)
    with pytest.raises(ds.BadInputError, match="no layers to read"):
        ds.explain(lambda batch: model(batch), x, method="saliency", target=logit(1) + channel("conv2", 1))


def test_a_class_needs_class_scores_and_logit_reads_a_maps_mean(x):
    torch.manual_seed(0)
    segmenter = nn.Conv2d(3, 4, 1).eval()  # (N, classes, H, W): a class score per pixel
    with pytest.raises(ds.TargetError, match=r"not \(N, classes\)"):
        ds.explain(segmenter, x, method="saliency", target=1)
    e = ds.explain(segmenter, x, method="input_x_gradient", target=logit(1))
    weight, bias = segmenter.weight.detach()[1, :, 0, 0], segmenter.bias.detach()[1]
    torch.testing.assert_close(e.scores, (x * weight[:, None, None]).sum(1).mean(dim=(1, 2)) + bias)
    torch.testing.assert_close(e.attribution, x * weight[:, None, None] / (16 * 16))
