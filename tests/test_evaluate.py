"""Classifier performance (against scikit-learn) and deletion/insertion faithfulness (closed forms, naive loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_cnn
from sklearn import metrics
from sklearn.preprocessing import label_binarize
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds
from deepscope.errors import BadInputError
from deepscope.explain.gradients import make_baseline

# Confusion matrix --------------------------------------------------------------------------------------------


def _labels(n: int = 200, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    scores = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[true]  # better than chance, with confusions
    return true, scores.argmax(axis=1), scores


@pytest.mark.parametrize("kind", ["tensor", "numpy", "list", "scores"])
def test_confusion_matrix_matches_sklearn(kind: str) -> None:
    true, pred, scores = _labels()
    given = {
        "tensor": (torch.tensor(true), torch.tensor(pred)),
        "numpy": (true, pred),
        "list": (true.tolist(), pred.tolist()),
        "scores": (torch.tensor(true), torch.tensor(scores, dtype=torch.float32)),
    }[kind]
    cm = ds.confusion_matrix(*given)
    expected = metrics.confusion_matrix(true, pred)
    np.testing.assert_array_equal(cm.counts.numpy(), expected)
    np.testing.assert_allclose(cm.normalized.numpy(), metrics.confusion_matrix(true, pred, normalize="true"))
    assert cm.accuracy == pytest.approx(metrics.accuracy_score(true, pred))
    off = expected.copy()
    np.fill_diagonal(off, 0)
    counts = [c for _, _, c in cm.most_confused]
    assert counts == sorted(off[off > 0].tolist(), reverse=True)
    t, p, c = cm.most_confused[0]
    assert off[int(t), int(p)] == c == off.max()


def test_confusion_matrix_classes_and_figure() -> None:
    true, pred = np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2])
    cm = ds.confusion_matrix(true, pred, classes=["cat", "dog", "eel", "fox"])
    assert cm.counts.shape == (4, 4) and cm.counts[3].sum() == 0 and cm.normalized[3].sum() == 0
    assert cm.most_confused == [("dog", "eel", 1)]
    for normalize in (False, True):
        texts = [t.get_text() for t in cm.figure(normalize=normalize).axes[0].texts]
        assert len(texts) == 16
        assert texts[5] == ("0.50" if normalize else "1")  # dog -> dog
    assert cm._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("true", "pred", "classes"),
    [([0, 1], [0], None), ([0, -1], [0, 1], None), ([0, 3], [0, 1], 2), ([0.5, 1], [0, 1], None)],
)
def test_confusion_matrix_bad_input(true: list, pred: list, classes: int | None) -> None:
    with pytest.raises(BadInputError):
        ds.confusion_matrix(true, pred, classes=classes)


def test_evaluate_model_streams_a_loader() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    cm = ds.evaluate_model(model, DataLoader(TensorDataset(x, y), batch_size=16), classes=["a", "b", "c"])
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    np.testing.assert_array_equal(cm.counts.numpy(), metrics.confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert cm.classes == ["a", "b", "c"]
    assert cm.labels is not None and cm.scores is not None
    torch.testing.assert_close(cm.scores, model(x).softmax(dim=1).detach())
    assert torch.equal(cm.labels, y)


# Binary classifiers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_binary_report_matches_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = 1 / (1 + np.exp(-(rng.normal(size=300) + 1.2 * labels)))
    if ties:
        scores = np.round(scores, 1)
    report = ds.binary_report(torch.tensor(labels), torch.tensor(scores), threshold=0.5)
    assert report.auc == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert report.average_precision == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(report.fpr, fpr)
    np.testing.assert_allclose(report.tpr, tpr)
    np.testing.assert_allclose(report.roc_thresholds[1:], thresholds[1:])
    # The metrics at the threshold, from hand counts.
    predicted = scores >= 0.5
    tp, fp = np.sum(predicted & (labels == 1)), np.sum(predicted & (labels == 0))
    fn, tn = np.sum(~predicted & (labels == 1)), np.sum(~predicted & (labels == 0))
    assert (report.tp, report.fp, report.fn, report.tn) == (tp, fp, fn, tn)
    assert report.accuracy == pytest.approx((tp + tn) / 300)
    assert report.precision == pytest.approx(tp / (tp + fp))
    assert report.recall == pytest.approx(tp / (tp + fn))
    assert report.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    moved = report.at(0.9)
    assert moved.tp == np.sum((scores >= 0.9) & (labels == 1)) and moved.auc == report.auc
    figure = report.figure(threshold=0.3)
    assert len(figure.axes) == 3
    assert report._repr_png_().startswith(b"\x89PNG")


def test_one_vs_rest_matches_sklearn() -> None:
    true, _, scores = _labels(k=3, seed=2)
    report = ds.binary_report(true, scores, classes=["a", "b", "c"])
    assert isinstance(report, ds.evaluate.OneVsRest)
    onehot = label_binarize(true, classes=[0, 1, 2])
    np.testing.assert_allclose(report.auc, metrics.roc_auc_score(onehot, scores, average=None))
    np.testing.assert_allclose(report.average_precision, metrics.average_precision_score(onehot, scores, average=None))
    assert [r.name for r in report.reports] == ["a", "b", "c"]
    assert len(report.figure().axes) == 2


@pytest.mark.parametrize(
    ("labels", "scores"),
    [([1, 1, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1]), ([0, 2, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1, float("nan")])],
)
def test_binary_report_bad_input(labels: list, scores: list) -> None:
    with pytest.raises(BadInputError):
        ds.binary_report(labels, scores)


# Faithfulness -------------------------------------------------------------------------------------------------


class RegionScore(nn.Module):
    """Logit 0 = sum of w * x over the channels and a known region of an 8x8 image; logit 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(2, 8, 8)
        weight[:, 2:6, 1:5] = torch.linspace(0.5, 2.0, 32).view(2, 4, 4)
        self.weight = nn.Parameter(weight)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        score = (x * self.weight).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _region_case() -> tuple[RegionScore, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = RegionScore()
    x = torch.rand(3, 2, 8, 8) + 0.1
    contribution = (x * model.weight.detach()).sum(dim=1)  # exact per-position share of the score
    return model, x, contribution


@pytest.mark.parametrize("target", [0, "callable"])
def test_deletion_closed_form(target: object) -> None:
    model, x, contribution = _region_case()
    spec = (lambda out: out[:, 0]) if target == "callable" else target
    steps = 16  # 64 positions: 4 per step
    result = ds.faithfulness(model, x, contribution, steps=steps, target=spec, probability=False, batch_size=10)
    ranked = contribution.flatten(1).sort(dim=1, descending=True).values
    removed = torch.cat([torch.zeros(3, 1), ranked.cumsum(dim=1)[:, 3::4]], dim=1)
    expected = contribution.flatten(1).sum(dim=1, keepdim=True) - removed
    torch.testing.assert_close(result.curves, expected)
    torch.testing.assert_close(result.auc, (expected[:, 1:] + expected[:, :-1]).sum(dim=1) / (2 * steps))
    assert result.curves.shape == (3, steps + 1) and result.fractions[-1] == 1


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
@pytest.mark.parametrize("probability", [False, True])
def test_perfect_map_beats_random_beats_inverted(metric: str, probability: bool) -> None:
    model, x, contribution = _region_case()
    maps = {
        "perfect": contribution,
        "random": torch.rand(contribution.shape, generator=torch.Generator().manual_seed(1)),
        "inverted": -contribution,
    }
    auc = {
        name: ds.faithfulness(model, x, m, metric=metric, steps=32, baseline=0.0, target=0, probability=probability).auc
        for name, m in maps.items()
    }
    if metric == "deletion":
        assert (auc["perfect"] < auc["random"]).all() and (auc["random"] < auc["inverted"]).all()
    else:
        assert (auc["perfect"] > auc["random"]).all() and (auc["random"] > auc["inverted"]).all()


def _naive(
    model: nn.Module,
    x: torch.Tensor,
    heatmap: torch.Tensor,
    targets: torch.Tensor,
    metric: str,
    steps: int,
    baseline: torch.Tensor,
) -> torch.Tensor:
    """One image and one step at a time."""
    curves = torch.zeros(x.shape[0], steps + 1)
    positions = heatmap[0].numel()
    for i in range(x.shape[0]):
        order = torch.argsort(heatmap[i].flatten(), descending=True, stable=True)
        for k in range(steps + 1):
            chosen = torch.zeros(positions, dtype=torch.bool)
            chosen[order[: round(k * positions / steps)]] = True
            chosen = chosen.view(heatmap.shape[1:])
            source, fill = (baseline[i], x[i]) if metric == "insertion" else (x[i], baseline[i])
            image = torch.where(chosen, fill, source)
            with torch.no_grad():
                curves[i, k] = model(image[None]).softmax(dim=1)[0, targets[i]]
    return curves


@pytest.mark.parametrize(("metric", "baseline"), [("deletion", 0.0), ("insertion", "blur"), ("deletion", "blur")])
def test_batched_equals_naive_loop(metric: str, baseline: object) -> None:
    model = tiny_cnn()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    e = ds.explain(model, x, method="saliency")
    steps = 10  # 64 positions: k * 6.4 never lands on a half
    result = ds.faithfulness(model, x, e, metric=metric, steps=steps, baseline=baseline, batch_size=7)
    expected = _naive(model, x, e.heatmap, e.targets, metric, steps, make_baseline(baseline, x))
    torch.testing.assert_close(result.curves, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(result.targets, e.targets) and result.method == "saliency"
    assert result.figure().axes and result._repr_png_().startswith(b"\x89PNG")


def test_explanation_targets_are_used_and_model_untouched() -> None:
    model = tiny_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    e = ds.explain(model, x, method="saliency", target=[1, 4])
    from_explanation = ds.faithfulness(model, x, e, steps=4)
    from_tensor = ds.faithfulness(model, x, e.heatmap, steps=4, target=[1, 4])
    torch.testing.assert_close(from_explanation.curves, from_tensor.curves)
    predicted = ds.faithfulness(model, x, e.heatmap, steps=4)
    assert not torch.allclose(predicted.curves, from_tensor.curves)
    assert not model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "options",
    [
        {"explanation": torch.rand(3, 4, 4)},
        {"explanation": torch.rand(2, 8, 8)},
        {"steps": 0},
        {"steps": 2.5},
        {"batch_size": 0},
        {"metric": "removal"},
        {"baseline": "zeros"},
        {"explanation": "map"},
    ],
)
def test_faithfulness_bad_input_before_work(options: dict) -> None:
    model, x, contribution = _region_case()
    kwargs = {"explanation": contribution, **options}
    with pytest.raises(BadInputError):
        ds.faithfulness(model, x, **kwargs)
    assert model.calls == 0
