"""ds.explain_dataset: every item of a data set explained into a Parquet file, and a sample into a run.

The rows must be what ``ds.explain`` says about the same items (to float16's precision), in the data's order, with
the right labels, predictions, targets and scores; downsampling must be block averages; the run's sample must be
the first misclassified items and then the first right ones, shown by the board's gallery with the file they come
from and their "misclassified only" marks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ANY_MODEL_METHODS, FAST_OPTIONS, tiny_cnn

import deepscope as ds
from deepscope.errors import BadInputError
from deepscope.store import Reader

N = 64


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.rand(N, 3, 16, 16, generator=generator), torch.randint(0, 5, (N,), generator=generator)


def _reference(model: torch.nn.Module, x: torch.Tensor, method: str, size: int, options: dict) -> ds.Explanation:
    """``ds.explain`` on the same batches, concatenated (a seeded method draws per call, so the batches matter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [ds.explain(model, part, method=method, **options) for part in x.split(size)]
    return ds.Explanation(
        method=method,
        heatmap=torch.cat([p.heatmap for p in parts]),
        attribution=None,
        targets=None if parts[0].targets is None else torch.cat([p.targets for p in parts]),  # type: ignore[misc]
        scores=torch.cat([p.scores for p in parts]),
        inputs=x,
    )


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_every_method_writes_what_ds_explain_says(method: str, data, tmp_path: Path) -> None:
    model, (x, labels) = tiny_cnn(), (data[0][:10, :, :8, :8], data[1][:10])
    options = FAST_OPTIONS.get(method, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ds.explain_dataset(
            model,
            (x, labels),
            method=method,
            path=tmp_path / "e.parquet",
            batch_size=4,
            progress=False,
            options=options,
        )
    expected = _reference(model, x, method, 4, options)
    table = pq.read_table(result.path)
    assert table.column("item").to_pylist() == list(range(10))
    assert table.column("label").to_pylist() == labels.tolist()
    assert table.column("prediction").to_pylist() == model(x).argmax(1).tolist()
    assert table.column("target").to_pylist() == expected.targets.tolist()  # type: ignore[union-attr]
    np.testing.assert_allclose(table.column("score").to_numpy(), expected.scores.numpy(), rtol=1e-5, atol=1e-6)
    assert table.schema.field("heatmap").type.value_type == "halffloat"
    stored = result.heatmaps()
    assert stored.shape == (10, 8, 8)
    reference = expected.heatmap.numpy()
    scale = np.abs(reference).reshape(10, -1).max(axis=1)
    np.testing.assert_allclose(table.column("heatmap_scale").to_numpy(), np.where(scale > 0, scale, 1), rtol=1e-6)
    # float16 keeps 11 bits relative to each map's largest value: tiny gradients do not vanish
    atol = scale.reshape(10, 1, 1) * 2**-14
    assert np.all(np.abs(stored - reference) <= 2**-10 * np.abs(reference) + atol)


def test_64_images_rows_accuracy_and_downsampled_maps(data, tmp_path: Path) -> None:
    model, (x, labels) = tiny_cnn(), data
    result = ds.explain_dataset(
        model, (x, labels), method="gradcam", path=tmp_path / "sub" / "e.parquet", downsample=4, progress=False
    )
    predictions = model(x).argmax(1)
    wrong = int((predictions != labels).sum())
    assert (result.items, result.labelled, result.misclassified) == (N, N, wrong)
    assert result.accuracy == pytest.approx(1 - wrong / N)
    assert result.heatmap_shape == (4, 4) and result.downsample == 4
    full = ds.explain(model, x, method="gradcam").heatmap
    blocks = full.reshape(N, 4, 4, 4, 4).mean(dim=(2, 4))  # 4 x 4 blocks of the 16 x 16 map, averaged
    np.testing.assert_allclose(result.heatmaps(), blocks.numpy(), rtol=2**-10, atol=float(blocks.abs().max()) * 2**-14)
    file = pq.ParquetFile(result.path)
    assert file.metadata.num_rows == N and file.metadata.num_row_groups == 1  # batch_size 64: one row group
    assert "gradcam" in repr(result) and "misclassified" in repr(result)


def test_a_partial_block_at_the_edge_is_averaged_over_what_it_holds(tmp_path: Path) -> None:
    model = tiny_cnn()
    x = torch.rand(3, 3, 10, 10)
    result = ds.explain_dataset(model, x, method="saliency", path=tmp_path / "e.parquet", downsample=4, progress=False)
    full = ds.explain(model, x, method="saliency").heatmap
    assert result.heatmap_shape == (3, 3) and result.misclassified is None  # no labels: nothing to count
    edge = full[:, 8:, 8:].mean(dim=(1, 2))  # the corner block holds 2 x 2 pixels
    np.testing.assert_allclose(
        result.heatmaps()[:, 2, 2], edge.numpy(), rtol=2**-10, atol=float(full.abs().max()) * 2**-14
    )
    assert pq.read_table(result.path).column("label").null_count == 3


def test_a_given_target_still_records_the_prediction(data, tmp_path: Path) -> None:
    model, x = tiny_cnn(), data[0][:6]
    result = ds.explain_dataset(model, x, method="saliency", target=2, path=tmp_path / "e.parquet", progress=False)
    table = pq.read_table(result.path)
    assert table.column("target").to_pylist() == [2] * 6
    assert table.column("prediction").to_pylist() == model(x).argmax(1).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random unit is silent for some inputs: blank maps are said
        unit = ds.explain_dataset(
            model, x, method="saliency", target=ds.Unit("relu3", 1), path=tmp_path / "u.parquet", progress=False
        )
    assert pq.read_table(unit.path).column("target").null_count == 6  # a unit is not a class


def test_the_run_gets_a_sample_that_the_gallery_shows_with_its_file(data, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepscope.dashboard import create_app

    model, (x, labels) = tiny_cnn(), data
    with ds.Run(tmp_path / "runs" / "a") as run:
        result = ds.explain_dataset(
            model,
            (x, labels),
            method="gradcam",
            run=run,
            sample=8,
            batch_size=16,
            classes=list("abcde"),
            progress=False,
        )
    assert result.path.parent == tmp_path / "runs" / "a" / "datasets" and result.path.is_file()
    predictions = model(x).argmax(1)
    wrong = (predictions != labels).nonzero().flatten().tolist()
    right = (predictions == labels).nonzero().flatten().tolist()
    assert len(wrong) >= 4 and len(right) >= 4  # a random model: both kinds, so the sample is half and half
    assert result.sample_items == sorted(wrong[:4] + right[:4])
    assert result.sample is not None
    torch.testing.assert_close(result.sample.inputs, x[result.sample_items])
    torch.testing.assert_close(
        result.sample.heatmap, ds.explain(model, x, method="gradcam").heatmap[result.sample_items]
    )

    (record,) = Reader(tmp_path / "runs" / "a").records("explanations")
    assert record.items == result.sample_items
    assert record.source == {"path": f"datasets/{result.path.name}", "items": N, "misclassified": len(wrong)}
    assert record.labels == ["abcde"[int(labels[i])] for i in result.sample_items]

    client = TestClient(create_app(tmp_path / "runs"), base_url="http://127.0.0.1")
    answer = client.get("/api/explanations", params={"run": "a", "tag": "explanations"}).json()
    assert answer["source"] == record.source
    assert [item["index"] for item in answer["items"]] == result.sample_items
    shown_wrong = [item["index"] for item in answer["items"] if item["correct"] is False]  # the page's filter
    assert shown_wrong == wrong[:4] and answer["misclassified"] == 4
    assert client.get("/api/file", params={"run": "a", "path": answer["items"][0]["input"].split("path=")[1]})


def test_a_second_call_logs_the_next_step_into_a_new_file(data, tmp_path: Path) -> None:
    model, x = tiny_cnn(), data[0][:4]
    with ds.Run(tmp_path / "r") as run:
        first = ds.explain_dataset(model, x, method="saliency", run=run, progress=False)
        second = ds.explain_dataset(model, x, method="saliency", run=run, progress=False)
    assert (first.step, second.step) == (0, 1) and first.path != second.path
    assert [r.items for r in Reader(tmp_path / "r").records("explanations")] == [[0, 1, 2, 3]] * 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": "e.csv"}, "ending in .parquet"),
        ({}, "pass path="),
        ({"path": "e.parquet", "downsample": 0}, "downsample=0"),
        ({"path": "e.parquet", "sample": -1}, "sample=-1"),
        ({"path": "e.parquet", "method": "gradcan"}, "gradcam"),
        ({"path": "e.parquet", "options": {"steps": 3}}, "steps"),
    ],
    ids=["suffix", "no-path", "downsample", "sample", "method", "option"],
)
def test_bad_arguments_say_what_to_change(arguments: dict, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match=message):
        ds.explain_dataset(tiny_cnn(), torch.rand(2, 3, 8, 8), progress=False, **arguments)
    assert not (tmp_path / "e.parquet").exists()


def test_batches_that_arrive_out_of_order_end_in_item_order(tmp_path: Path) -> None:
    from deepscope.explain.dataset import _Appender

    def rows(first: int, n: int) -> dict:
        items = np.arange(first, first + n)[::-1].copy()  # each batch's rows reversed too
        return {"item": items, "score": items.astype(np.float32), "heatmap_scale": np.ones(n, np.float32),
                "heatmap": np.zeros((n, 2, 2), np.float16)}  # fmt: skip

    for name, batches in {"separate": [(8, 4), (0, 4), (4, 4)], "overlapping": [(8, 4), (0, 9)]}.items():
        appender = _Appender(tmp_path / f"{name}.parquet", "saliency", 1, 2)
        for first, n in batches:
            appender(None, rows(first, n))
        appender.close()
        table = pq.read_table(tmp_path / f"{name}.parquet")
        items = table.column("item").to_pylist()
        assert items == sorted(items) and table.column("score").to_pylist() == [float(i) for i in items], name
        assert pq.ParquetFile(tmp_path / f"{name}.parquet").num_row_groups == (3 if name == "separate" else 1)


def test_the_model_is_left_as_found(data, tmp_path: Path) -> None:
    from conftest import hooks_left

    model = tiny_cnn()
    model.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    ds.explain_dataset(model, data[0][:8], method="guided_gradcam", path=tmp_path / "e.parquet", progress=False)
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert hooks_left(model) == 0 and all(p.grad is None for p in model.parameters())


def test_the_gallery_page_shows_the_sample_and_filters_its_misclassified_items(data, tmp_path: Path) -> None:
    """The board's page (headless Chromium) on a run that explain_dataset logged into."""
    from conftest import CHROMIUM, CHROMIUM_ARGS, serving

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")
    from deepscope.dashboard import create_app

    model, (x, labels) = tiny_cnn(), data
    with ds.Run(tmp_path / "runs" / "a") as run:
        result = ds.explain_dataset(model, (x, labels), method="gradcam", run=run, sample=6, progress=False)
    wrong = [i for i, y, p in zip(result.sample_items, result.sample_labels, result.sample_predictions) if y != p]
    assert len(wrong) == 3
    with serving(create_app(tmp_path / "runs")) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{url}/?view=explanations")
        page.wait_for_function("() => document.querySelectorAll('.gallery-row:not(.head)').length === 6")
        rows = "(rs) => rs.map((r) => Number(r.dataset.index))"
        assert page.eval_on_selector_all(".gallery-row:not(.head)", rows) == result.sample_items
        info = page.inner_text('.view[data-view="explanations"] aside > p.note')
        assert f"a sample of {N} items, {result.misclassified} misclassified" in info and result.path.name in info
        page.check('.view[data-view="explanations"] aside input[type=checkbox]')
        page.wait_for_function("() => document.querySelectorAll('.gallery-row:not(.head)').length === 3")
        assert page.eval_on_selector_all(".gallery-row:not(.head)", rows) == wrong
        browser.close()
    assert not problems


def test_a_generator_is_explained_without_a_sample(data, tmp_path: Path) -> None:
    x, labels = data[0][:8], data[1][:8]
    batches = ((x[i : i + 4], labels[i : i + 4]) for i in range(0, 8, 4))
    with ds.Run(tmp_path / "r") as run, pytest.warns(UserWarning, match="read again"):
        result = ds.explain_dataset(tiny_cnn(), batches, method="saliency", run=run, progress=False)
    assert result.items == 8 and result.sample is None and result.sample_items == []
    assert pq.read_table(result.path).column("item").to_pylist() == list(range(8))
    assert Reader(tmp_path / "r").tags() == {}  # nothing to show in the gallery
