"""The method comparison table: gradient maps beat a random map where they should; failures are listed."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST_OPTIONS, TinyCNN, squares, trained_on_squares
from torch import nn

import deepscope as ds

# One worker runs this module and the other user of conftest.trained_on_squares, which trains once for both.
pytestmark = pytest.mark.xdist_group("squares")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    """TinyCNN told which channel holds a bright square: the evidence is the square, 16 of 256 pixels."""
    model, generator = trained_on_squares()
    return model, squares(8, generator)[0]


def test_gradient_maps_rank_above_a_random_map(trained: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained
    table = ds.evaluate.compare_methods(model, images, methods=["saliency", "input_x_gradient", "gradcam"], steps=16)
    assert table.ranking[-1] == "random", str(table)
    rows = {row.method: row for row in table.rows}
    for method in ("saliency", "input_x_gradient", "gradcam"):
        assert rows[method].deletion < rows["random"].deletion - 0.1, str(table)
        assert rows[method].insertion > rows["random"].insertion, str(table)
        assert rows[method].sanity < 0.6, str(table)  # the maps fall apart with the weights
    assert rows["random"].sanity == pytest.approx(1.0)  # a map that ignores the model fails the sanity check
    deletions = [row.deletion for row in table.rows]
    assert deletions == sorted(deletions)
    # The per-input values behind each mean are the ones ds.faithfulness gives.
    e = ds.explain(model, images, method="gradcam")
    reference = ds.faithfulness(model, images, e, steps=16).auc
    torch.testing.assert_close(table.aucs["gradcam"]["deletion"], reference)


def test_deletion_baseline_reaches_the_deletion_curve_only(trained: tuple[nn.Module, torch.Tensor]) -> None:
    """compare_methods(baseline=b) deletes to b (ds.faithfulness with baseline b); insertion keeps its blur."""
    model, images = trained
    table = ds.evaluate.compare_methods(model, images, methods=["gradcam"], steps=16, random=False, baseline=-1.0)
    e = ds.explain(model, images, method="gradcam")
    deleted_to_b = ds.faithfulness(model, images, e, steps=16, baseline=-1.0).auc
    deleted_to_0 = ds.faithfulness(model, images, e, steps=16).auc
    assert not torch.allclose(deleted_to_b, deleted_to_0)  # the baseline matters here, so the check below can fail
    torch.testing.assert_close(table.aucs["gradcam"]["deletion"], deleted_to_b)
    inserted = ds.faithfulness(model, images, e, steps=16, metric="insertion").auc
    torch.testing.assert_close(table.aucs["gradcam"]["insertion"], inserted)


def test_failing_methods_are_listed_not_raised() -> None:
    torch.manual_seed(0)
    no_gap = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()
    x = torch.rand(2, 3, 16, 16)
    table = ds.evaluate.compare_methods(no_gap, x, methods=None, steps=4, sort_by="insertion", options=FAST_OPTIONS)
    assert {row.method for row in table.rows} == {*ds.methods(), "random"}
    assert "global average pooling" in table.failed["cam"]
    assert "saliency" in table.ranking
    assert table.rows[-len(table.failed) :] == [row for row in table.rows if row.error]
    insertions = [row.insertion for row in table.rows if row.error is None]
    assert insertions == sorted(insertions, reverse=True)
    html = table._repr_html_()
    assert html.count("<tr>") == len(table.rows) + 1 and "failed: " in html
    assert table._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metrics": ["deletion", "accuracy"]},
        {"metrics": "deletion"},
        {"sort_by": "sanity", "metrics": ["deletion"]},
        {"methods": ["no_such"]},
    ],
)
def test_bad_input(kwargs: dict) -> None:
    with pytest.raises(ds.BadInputError):
        ds.evaluate.compare_methods(TinyCNN(classes=3).eval(), torch.rand(2, 3, 16, 16), **kwargs)


def first_layer_map(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A map that reads only the first convolution: it stays the trained map until the cascade reaches conv1."""
    return model.conv1(inputs)[:, 0].detach()


def test_sanity_column_summarises_the_whole_cascade(trained: tuple[nn.Module, torch.Tensor]) -> None:
    """The sanity column is each input's Spearman correlation averaged over every randomisation step, then over
    the inputs; a map that survives the top layers scores high there although its last step looks like a pass."""
    model, images = trained
    methods = ["saliency", first_layer_map]
    table = ds.evaluate.compare_methods(model, images, methods=methods, metrics=["sanity"], random=False)
    check = ds.sanity_check(model, images, methods=methods)
    assert check.steps == ["original", "fc", "conv3", "conv2", "conv1"]
    rows = {row.method: row.sanity for row in table.rows}
    for name in ("saliency", "first_layer_map"):
        spearman = check.scores[name]["spearman"]  # [steps, N]
        by_hand = sum(spearman[step] for step in range(1, 5)) / 4
        torch.testing.assert_close(table.aucs[name]["sanity"], by_hand)
        assert rows[name] == pytest.approx(float(by_hand.mean()), abs=1e-6)
    survivor = check.scores["first_layer_map"]["spearman"].mean(dim=1)
    assert survivor[1:4].tolist() == pytest.approx([1.0, 1.0, 1.0])  # fc, conv3, conv2 random: the same map
    assert float(survivor[-1]) < 0.5  # conv1 random too: the last step alone would call it a pass
    assert rows["first_layer_map"] > 0.7 > rows["saliency"]  # (three steps at 1 + the last) / 4
    assert table.ranking == ["saliency", "first_layer_map"]
    assert "mean over the randomisation cascade" in table.table()[0][1]
