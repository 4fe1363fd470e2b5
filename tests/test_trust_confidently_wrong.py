"""The gallery of confidently wrong cases: exactly the top-k errors by confidence, explained."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds


@pytest.fixture(scope="module")
def planted() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tiny CNN, 100 inputs labelled with its own predictions except 12 planted errors; their confidences."""
    torch.manual_seed(0)
    model = TinyCNN(classes=4).eval()
    x = 3 * torch.randn(100, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        confidence, predicted = model(x).softmax(dim=1).max(dim=1)
    labels = predicted.clone()
    errors = torch.randperm(100, generator=torch.Generator().manual_seed(2))[:12]
    labels[errors] = (predicted[errors] + 1) % 4
    return model, x, labels, confidence


@pytest.mark.parametrize("loader", [False, True])
def test_finds_exactly_the_top_k_by_confidence(planted: tuple, loader: bool) -> None:
    model, x, labels, confidence = planted
    wrong = torch.nonzero(labels != model(x).argmax(dim=1)).flatten()
    expected = wrong[confidence[wrong].argsort(descending=True)][:5]
    data = DataLoader(TensorDataset(x, labels), batch_size=7) if loader else (x, labels)
    result = ds.evaluate.confidently_wrong(model, data, k=5, method="saliency", classes=list("abcd"), batch_size=9)
    assert result.indices.tolist() == expected.tolist()
    assert (result.wrong, result.total) == (12, 100)
    torch.testing.assert_close(result.confidence, confidence[expected])
    torch.testing.assert_close(result.inputs, x[expected])
    assert torch.equal(result.labels, labels[expected])
    assert torch.equal(result.predictions, (labels[expected] - 1) % 4)
    # The explanation is of the wrong, predicted class, for exactly these inputs.
    reference = ds.explain(model, x[expected], method="saliency", target=result.predictions)
    torch.testing.assert_close(result.explanation.heatmap, reference.heatmap)
    title = result.titles()[0]
    assert title == f"true: {'abcd'[int(labels[expected[0]])]} / predicted: {'abcd'[int(result.predictions[0])]} " + (
        f"(p={float(confidence[expected[0]]):.2f})"
    )


def test_gallery_and_fewer_errors_than_k(planted: tuple) -> None:
    model, x, labels, _ = planted
    result = ds.evaluate.confidently_wrong(model, (x, labels), k=50, method="gradcam")
    assert len(result.indices) == 12 and result.explanation.method == "gradcam"
    assert (result.confidence[:-1] >= result.confidence[1:]).all()
    figure = result.figure(columns=4)
    assert len(figure.axes) == 2 * 12
    titles = [panel._suptitle.get_text() for panel in figure.subfigs if panel.get_visible()]
    assert titles == [t.replace(" / ", "\n") for t in result.titles()]
    assert result._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 0}, {"method": "no_such"}, {"options": {"steps": 3}}, {"data": "images"}, {"data": "mismatch"}],
)
def test_bad_input(planted: tuple, kwargs: dict) -> None:
    model, x, labels, _ = planted
    data = kwargs.pop("data", (x, labels))
    data = {"images": x, "mismatch": (x, labels[:3])}.get(data, data) if isinstance(data, str) else data
    with pytest.raises(ds.BadInputError):
        ds.evaluate.confidently_wrong(model, data, **kwargs)


def test_nothing_wrong_is_bad_input(planted: tuple) -> None:
    model, x, _, _ = planted
    with pytest.raises(ds.BadInputError, match="correctly"):
        ds.evaluate.confidently_wrong(model, (x, model(x).argmax(dim=1)), method="saliency")
