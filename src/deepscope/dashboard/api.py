"""What the board's JSON API answers: pure functions from a served store of runs to JSON-able values, one per view.

Nothing here knows about HTTP; :mod:`deepscope.dashboard.server` maps each function to a route and
:class:`NotFound` to a 404. What is served is a :class:`~deepscope.dashboard.sources.Source` (a directory of runs,
or a PostgreSQL database; a function given a directory's path serves that directory). Data is read only through
:class:`deepscope.store.Reader`, opened anew for each call, so a call sees the runs and points written since the
last one (:func:`scalars_batch_json` reuses encoded answers only of runs whose change token, ``Reader.stamp``, is
the same). A run name or a file reference from a request is resolved by the source, which refuses anything outside
what it serves (:func:`~deepscope.dashboard.sources.run_dir`, :func:`~deepscope.dashboard.sources.file_path`).

Adding a view: one function here, one route in ``server.py``, its tab named by the record kinds it shows
(``Codec.view``, :data:`VIEWS`), one page section.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from ..errors import BadInputError, StoreError
from ..store import Reader, parquet
from ..store.records import LOWER_IS_BETTER, codecs
from ..store.records.audio import KIND as AUDIO
from ..store.records.comparison import KIND as COMPARISON
from ..store.records.confusion import KIND as CONFUSION
from ..store.records.embedding import KIND as EMBEDDING
from ..store.records.explanation import KIND as EXPLANATION
from ..store.records.faithfulness import KIND as FAITHFULNESS
from ..store.records.graph import KIND as GRAPH
from ..store.records.histogram import KIND as HISTOGRAM
from ..store.records.image import KIND as IMAGE
from ..store.records.pr_curve import KIND as PR_CURVE
from ..store.records.sanity import KIND as SANITY
from ..store.records.scalar import KIND as SCALAR
from ..store.records.text import KIND as TEXT
from ..store.records.video import KIND as VIDEO
from .sources import NotFound, Shared, Source, file_path, run_dir, source

__all__ = ["NotFound", "Served", "file_path", "run_dir", "served_root"]

# What a view reads from: a source, or the path of a directory of runs.
Served = Source | Path

# Tab name -> the tag kinds whose presence in any run makes the tab appear: each record kind names its tab
# (Codec.view), in the order of the tabs.
TABS = ("scalars", "distributions", "graph", "images", "explanations", "evaluation", "text", "projector")
VIEWS: dict[str, tuple[str, ...]] = {tab: tuple(c.kind for c in codecs() if c.view == tab) for tab in TABS}

# The Features tab: image tags ``features/<layer>/<what>`` (``what``: filters, maximize, top_patches, or one unit's
# ``top_patches/<unit>``, ...), scalars ``features/<layer>/<what>/<name>`` beside them (the filters' ``noise``); see
# deepscope.features.features_tag.
FEATURES_PREFIX = "features/"

# Seed 000's advice, shown above the explanation gallery.
ADVICE = "Do not focus only on cases that are classified correctly: deep neural networks are prone to taking shortcuts."

# Tag kinds the Images tab shows beside pictures: sounds (WAV) and clips (animated GIF).
MEDIA = VIEWS["images"]

DEFAULT_MAX_POINTS = 2000
# Histograms per series sent at most by default (TensorBoard keeps 500 too); ask for a step window to see more.
DEFAULT_MAX_STEPS = 500
# How a scalar answer's four arrays are sent: JSON numbers, or each array's little-endian bytes in base64.
ENCODINGS = ("json", "base64")


# ---- views ------------------------------------------------------------------------------------------------------


def runs(root: Served) -> list[dict[str, Any]]:
    """Every run under ``root``, sorted by name: ``{"name", "status", "created_at", "tags": {tag: kind}, "error"}``.

    Reads each run's info and tag list only, never a series; an unreadable run is listed with status
    ``"unreadable"`` and the reason in ``error``.
    """
    return [
        {"name": run.name, "status": run.status, "created_at": run.created_at, "tags": run.tags, "error": run.error}
        for run in _source(root).runs()
    ]


def views(root: Served) -> dict[str, bool]:
    """Which tabs have data in at least one run."""
    listed = _source(root).runs()
    present = {kind for run in listed for kind in run.tags.values()}
    shown = {view: not present.isdisjoint(kinds) for view, kinds in VIEWS.items()}
    # Images under features/<layer>/<what> have their own tab, and only those are shown there.
    pictures = [tag for run in listed for tag, kind in run.tags.items() if kind == IMAGE]
    media = any(kind in (AUDIO, VIDEO) for run in listed for kind in run.tags.values())
    shown["images"] = media or any(_feature(tag) is None for tag in pictures)
    shown["features"] = any(_feature(tag) is not None for tag in pictures)
    return shown


def features(root: Served, run: str) -> dict[str, Any]:
    """The run's feature pictures by layer, for the Features tab: ``{"run", "steps", "layers": [{"layer", "kinds":
    [{"what", "tag", "steps", "scalars": {name: {"steps", "values"}}}]}]}``, layers and kinds sorted by name.

    Only tags and steps (and the few scalars beside them, e.g. the filters' mean noise score); the pictures
    themselves come from :func:`images` under each kind's ``tag``.
    """
    layers: dict[str, list[dict[str, Any]]] = {}
    every_step: set[int] = set()
    with _reader(root, run) as reader:
        tags = reader.tags()
        for tag in sorted(tag for tag, kind in tags.items() if kind == IMAGE):
            parsed = _feature(tag)
            if parsed is None:
                continue
            steps = sorted({step for step, _, _ in reader.files(tag)})
            every_step.update(steps)
            scalars = {}
            for name in sorted(t for t, k in tags.items() if k == SCALAR and t.startswith(tag + "/")):
                series = reader.scalars(name, max_points=DEFAULT_MAX_POINTS)
                scalars[name[len(tag) + 1 :]] = {"steps": series.steps.tolist(), "values": _floats(series.values)}
            layers.setdefault(parsed[0], []).append({"what": parsed[1], "tag": tag, "steps": steps, "scalars": scalars})
    return {
        "run": run,
        "steps": sorted(every_step),
        "layers": [{"layer": layer, "kinds": kinds} for layer, kinds in sorted(layers.items())],
    }


def _feature(tag: str) -> tuple[str, str] | None:
    """``(layer, what)`` of a Features tag ``features/<layer>/<what>``, else ``None``. A layer's name has no ``/``
    (module names use dots); ``what`` may: ``top_patches/5`` from ``TopPatches.to_records``, one per unit."""
    if not tag.startswith(FEATURES_PREFIX):
        return None
    layer, _, what = tag[len(FEATURES_PREFIX) :].partition("/")
    return (layer, what) if layer and what else None


def scalars(
    root: Served,
    run: str,
    tag: str,
    start: int | None = None,
    end: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    encoding: str = "json",
) -> dict[str, Any]:
    """The points of a scalar tag with ``start <= step <= end``, downsampled to at most ``max_points``.

    With ``encoding="json"``, ``steps``, ``values``, ``epochs`` and ``wall_times`` are lists of numbers, and
    non-finite values become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no NaN). With
    ``encoding="base64"`` (what the page asks for) each is ``{"dtype": "<i8" | "<f8", "base64": ...}``: the
    array's little-endian bytes, exact to the bit, NaN and infinities included, no longer than decimal text and
    much cheaper to make (no float formatting); the page reads it with a ``DataView``.
    """
    _check_scalar_options(max_points, encoding)
    with _reader(root, run) as reader:
        series = reader.scalars(tag, start=start, end=end, max_points=max_points)
    columns = {"steps": series.steps, "values": series.values, "epochs": series.epochs, "wall_times": series.wall_times}
    encoded: dict[str, Any]
    if encoding == "base64":
        encoded = {name: _packed(column) for name, column in columns.items()}
    else:
        encoded = {name: _floats(c) if c.dtype.kind == "f" else c.tolist() for name, c in columns.items()}
    return {"run": run, "tag": tag, **encoded, "total": series.total, "downsampled": series.downsampled}


def scalars_batch(
    root: Served,
    tag: str,
    runs: Sequence[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    encoding: str = "json",
) -> dict[str, Any]:
    """One scalar tag of many runs: ``{"tag", "series": [the answer of :func:`scalars` for each run]}``.

    ``runs`` in the order given; ``None`` means every readable run that has ``tag`` as a scalar tag, by name.
    The first run that is unknown, unreadable or lacks the tag raises :class:`NotFound` naming it.
    """
    return json.loads(scalars_batch_json(root, tag, runs, start, end, max_points, encoding))


def scalars_batch_json(
    root: Served,
    tag: str,
    runs: Sequence[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    encoding: str = "json",
) -> bytes:
    """:func:`scalars_batch` as compact JSON bytes, which is what the server sends.

    Each run's part is the same bytes ``/api/scalars`` would send. The part of a run that no writer holds is
    kept in :data:`ENCODED`, keyed by the run's change token (a directory's file sizes and modification times; a
    database run's count of committed batches), so asking again (a reload, a second viewer, zooming back out)
    costs a ``stat`` per run (one query for every run in a database) instead of a read, a downsampling and an
    encoding.
    """
    _check_scalar_options(max_points, encoding)
    served = _source(root)
    if runs is None:
        runs = [run.name for run in served.runs() if run.tags.get(tag) == SCALAR]
    # Stamped before reading, all at once: a write that lands during or after a read changes its run's stamp, so
    # a stale answer is never found again.
    stamps = served.stamps(runs)
    parts = [
        _scalars_encoded(served, run, tag, start, end, max_points, encoding, stamp) for run, stamp in zip(runs, stamps)
    ]
    pieces = [b'{"tag":', _dumps(tag), b',"series":[']
    for k, part in enumerate(parts):  # one copy of megabytes of series, not one per concatenation
        pieces += (b",", part) if k else (part,)
    return b"".join((*pieces, b"]}"))


def histograms(
    root: Served,
    run: str,
    tag: str,
    start: int | None = None,
    end: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> dict[str, Any]:
    """The histograms of a tag with ``start <= step <= end``, in the order logged, with their bins and summary
    statistics: at most ``max_steps`` of them, spread evenly over the range with the first and last included
    (a series logged every step of a long run is never sent whole). ``total`` says how many the range holds and
    ``tag_total`` how many the tag holds at all steps; ask again with a narrower range to see every step of a part.
    """
    if max_steps < 2:
        raise BadInputError(f"max_steps must be at least 2 (the first and the last step), not {max_steps}")
    with _reader(root, run) as reader:
        _check_kind(reader, run, tag, HISTOGRAM)
        total = reader.count(tag, start, end)
        tag_total = total if start is None and end is None else reader.count(tag)
        records: list[Any] = reader.records(tag, start, end, max_records=max_steps)  # Histograms: the kind is checked
    first = records[0] if records else None
    return {
        "run": run,
        "tag": tag,
        "layer": first.layer if first else "",
        "kind": first.kind if first else "other",
        "total": total,
        "tag_total": tag_total,
        "downsampled": len(records) < total,
        "points": [
            {
                "step": h.step,
                "low": _float(h.low),
                "high": _float(h.high),
                "counts": np.asarray(h.counts).tolist(),
                "mean": _float(h.mean),
                "std": _float(h.std),
                "zero_fraction": _float(h.zero_fraction),
                "norm": _float(h.norm),
                "count": h.count,
            }
            for h in records
        ],
    }


def graph(root: Served, run: str, tag: str = "model") -> dict[str, Any]:
    """The model graph stored under ``tag`` (the last one, if logged more than once)."""
    records = _records(root, run, tag, GRAPH)
    if not records:
        raise NotFound(f"run {run!r} has no graph under {tag!r}")
    g = records[-1]
    return _clean({"run": run, "tag": tag, "modules": g.modules, "ops": g.ops, "ops_method": g.ops_method})


def images(root: Served, run: str, tag: str) -> dict[str, Any]:
    """The pictures, sounds or clips of a tag, in the order logged, with the URL of each file (:func:`file_path`).

    ``kind`` says which: ``"image"`` (a PNG; points ``{"step", "url", "width", "height", "caption"}``),
    ``"video"`` (an animated GIF; also ``"frames"``, ``"fps"``) or ``"audio"`` (a WAV file; points ``{"step",
    "url", "sample_rate", "channels", "seconds"}``).
    """
    with _reader(root, run) as reader:
        kind = reader.tags().get(tag)
        if kind not in MEDIA:
            _check_kind(reader, run, tag, IMAGE)
        rows = reader.files(tag)
    points = []
    for step, file, meta in rows:
        point: dict[str, Any] = {"step": step, "url": file_url(run, file)}
        if kind == AUDIO:
            rate = meta["sample_rate"]
            point |= {"sample_rate": rate, "channels": meta["channels"], "seconds": meta["frames"] / rate}
        else:
            height, width = (meta.get("shape") or [0, 0])[:2]
            point |= {"width": width, "height": height, "caption": meta.get("caption", "")}
            if kind == VIDEO:
                point |= {"frames": meta["frames"], "fps": meta["fps"]}
        points.append(point)
    return {"run": run, "tag": tag, "kind": kind, "points": points}


def custom_scalars(root: Served) -> dict[str, Any]:
    """The custom-scalars layouts of every run (``SummaryWriter.add_custom_scalars``), merged, with the scalar tags
    each chart draws per run: ``{"categories": [{"category", "charts": [{"title", "type": "multiline" | "margin",
    "tags", "runs": {run: [tag, ...]}}]}]}``.

    Categories and charts keep the order of the layouts (runs by name, each run's last layout); a chart that two
    runs' layouts name alike is the first one's. A multiline chart draws every scalar tag that one of its
    regexes finds (``re.search``, as TensorBoard); a margin chart its value, lower and upper tags, in order, for
    the runs that have all three.
    """
    charts: dict[str, dict[str, tuple[str, list[str]]]] = {}
    scalar_tags: dict[str, list[str]] = {}
    for listed in _source(root).runs():
        if "custom_scalars" not in listed.tags.values():
            continue
        scalar_tags[listed.name] = sorted(tag for tag, kind in listed.tags.items() if kind == SCALAR)
        try:
            with _reader(root, listed.name) as reader:
                layouts = [t for t, k in reader.tags().items() if k == "custom_scalars"]
                stored = [reader.records(t)[-1] for t in layouts]
        except NotFound:
            continue  # a run that became unreadable is listed as such by runs()
        for record in stored:
            for category, titled in record.layout.items():  # type: ignore[union-attr]
                for title, (kind, tags) in titled.items():
                    charts.setdefault(category, {}).setdefault(title, (kind.lower(), list(tags)))
    categories = []
    for category, titled in charts.items():
        drawn = []
        for title, (kind, tags) in titled.items():
            per_run: dict[str, list[str]] = {}
            for name, held in scalar_tags.items():
                if kind == "margin":
                    found = tags if all(tag in held for tag in tags) else []
                else:
                    patterns = [re.compile(pattern) for pattern in tags]
                    found = [tag for tag in held if any(p.search(tag) for p in patterns)]
                if found:
                    per_run[name] = found
            drawn.append({"title": title, "type": kind, "tags": tags, "runs": per_run})
        categories.append({"category": category, "charts": drawn})
    return {"categories": categories}


def confusion_matrix(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A confusion matrix at ``step`` (default: the last one logged under the tag), counts and row-normalised.

    ``{"run", "tag", "steps": every step logged, "step", "classes", "counts": [K][K] (row = true class),
    "normalized": each row divided by its total (0 for a class without samples), "accuracy", "total"}``.
    """
    records = _records(root, run, tag, CONFUSION)
    chosen = _at_step(records, step, run, tag)
    counts = np.asarray(chosen.counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    total = int(counts.sum())
    return {
        "run": run,
        "tag": tag,
        "steps": [r.step for r in records],
        "step": chosen.step,
        "classes": chosen.classes,
        "counts": counts.tolist(),
        "normalized": normalized.tolist(),
        "accuracy": float(np.trace(counts)) / total if total else 0.0,
        "total": total,
    }


def pr_curve(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """ROC and PR curves and both classes' score distributions of a binary classifier at ``step`` (default: last).

    From the counts stored per threshold: ``fpr = fp / (fp + tn)``, ``tpr = recall = tp / (tp + fn)``; ``auc`` is
    the trapezoidal area under the ROC points, closed by (0, 0) and (1, 1). The scores of each class fall into
    the bins between consecutive thresholds: ``positives[i] = tp[i] - tp[i + 1]`` (the last bin: ``tp[-1]``),
    likewise ``negatives`` from ``fp``, so the distributions come from the same counts, with ``edges`` = the
    thresholds. Keys: ``run, tag, steps, step, thresholds, tp, fp, tn, fn, precision, recall, fpr, tpr, auc,
    positives, negatives``.
    """
    records = _records(root, run, tag, PR_CURVE)
    c = _at_step(records, step, run, tag)
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (c.tp, c.fp, c.tn, c.fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr, tpr = fp / (fp + tn), tp / (tp + fn)
    finite = np.isfinite(fpr) & np.isfinite(tpr)
    x, y = np.r_[0.0, fpr[finite], 1.0], np.r_[0.0, tpr[finite], 1.0]
    order = np.lexsort((y, x))
    auc = float(np.trapezoid(y[order], x[order])) if finite.any() else float("nan")
    return {
        "run": run,
        "tag": tag,
        "steps": [r.step for r in records],
        "step": c.step,
        **{name: _floats(np.asarray(getattr(c, name), dtype=np.float64)) for name in ("thresholds", "precision")},
        **{name: _floats(a) for name, a in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn))},
        "recall": _floats(np.asarray(c.recall, dtype=np.float64)),
        "fpr": _floats(fpr),
        "tpr": _floats(tpr),
        "auc": _float(auc),
        "positives": _floats(tp - np.r_[tp[1:], 0.0]),
        "negatives": _floats(fp - np.r_[fp[1:], 0.0]),
    }


def sanity_check(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A sanity check's similarity curves at ``step`` (default: the last logged under the tag).

    ``{"run", "tag", "steps", "step", "mode", "methods", "stages": the check's steps ("original", then each layer
    randomised), "metrics", "inputs", "curves": {method: {metric: {"mean": [stages], "std": [stages]}}}}``.
    """
    records = _records(root, run, tag, SANITY)
    c = _at_step(records, step, run, tag)
    curves = {
        method: {
            metric: {"mean": _floats(c.mean[method][metric]), "std": _floats(c.std[method][metric])}
            for metric in c.metrics
        }
        for method in c.methods
    }
    return {
        "run": run,
        "tag": tag,
        "steps": [r.step for r in records],
        "step": c.step,
        "mode": c.mode,
        "methods": c.methods,
        "stages": c.stages,
        "metrics": c.metrics,
        "inputs": c.inputs,
        "curves": curves,
    }


def faithfulness(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """Deletion or insertion curves of one or more methods at ``step`` (default: the last logged under the tag).

    ``{"run", "tag", "steps", "step", "metric", "probability", "inputs", "fractions", "curves": [{"method",
    "mean", "std", "auc"}]}``: per method the mean curve over the inputs, its standard deviation, its mean AUC.
    """
    records = _records(root, run, tag, FAITHFULNESS)
    c = _at_step(records, step, run, tag)
    curves = [
        {"method": method, "mean": _floats(c.mean[i]), "std": _floats(c.std[i]), "auc": _float(float(c.auc[i]))}
        for i, method in enumerate(c.methods)
    ]
    return {
        "run": run,
        "tag": tag,
        "steps": [r.step for r in records],
        "step": c.step,
        "metric": c.metric,
        "probability": c.probability,
        "inputs": c.inputs,
        "fractions": _floats(c.fractions),
        "curves": curves,
    }


def method_comparison(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """A method comparison table at ``step`` (default: the last logged under the tag), best method first.

    ``{"run", "tag", "steps", "step", "metrics", "sort_by", "lower_is_better": {metric: bool}, "rows":
    [{"method", "values": {metric: mean or null}, "std": {metric: spread over the inputs or null}, "error":
    why the method failed, or null}]}``; ``null`` marks a value not measured (every value of a failed method).
    """
    records = _records(root, run, tag, COMPARISON)
    c = _at_step(records, step, run, tag)

    def measured(values: np.ndarray) -> dict[str, float | str | None]:
        return {metric: None if math.isnan(v) else _float(v) for metric, v in zip(c.metrics, values.tolist())}

    rows = [
        {"method": method, "values": measured(c.mean[i]), "std": measured(c.std[i]), "error": c.errors[i]}
        for i, method in enumerate(c.methods)
    ]
    return {
        "run": run,
        "tag": tag,
        "steps": [r.step for r in records],
        "step": c.step,
        "metrics": c.metrics,
        "sort_by": c.sort_by,
        "lower_is_better": {metric: LOWER_IS_BETTER[metric] for metric in c.metrics},
        "rows": rows,
    }


def explanations(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """The explanation gallery at ``step`` (default: the last set logged under the tag): per input its picture,
    true label, prediction, whether they agree, and per method the overlay and heatmap with what it explained.

    ``{"run", "tag", "steps", "step", "methods", "advice", "misclassified": count, "items": [{"index", "label",
    "prediction", "correct": true/false/null (unknown without labels or predictions), "input": url, "maps":
    [{"method", "target", "score", "overlay": url, "heatmap": url}]}], "source"}``; each url is :func:`file_url`'s.

    A sample of an explained data set (``ds.explain_dataset``) numbers its items by their ids in the data set, and
    ``source`` says where every item is: ``{"path", "items", "misclassified"}`` (``None`` for other sets).
    """
    records = _records(root, run, tag, EXPLANATION)
    step_taken, _, data = _at_step(records, step, run, tag)

    labels, predictions = data.get("labels"), data.get("predictions")
    ids = data.get("items") or range(len(data["inputs"]))
    items = []
    for i, picture in enumerate(data["inputs"]):
        label = labels[i] if labels else None
        prediction = predictions[i] if predictions else None
        maps = [
            {
                "method": method,
                "target": data["targets"][m][i],
                "score": _float(float(data["scores"][m][i])),
                "overlay": file_url(run, data["overlays"][m][i]),
                "heatmap": file_url(run, data["heatmaps"][m][i]),
            }
            for m, method in enumerate(data["methods"])
        ]
        correct = None if label is None or prediction is None else label == prediction
        items.append(
            {
                "index": ids[i],
                "label": label,
                "prediction": prediction,
                "correct": correct,
                "input": file_url(run, picture),
                "maps": maps,
            }
        )
    return {
        "run": run,
        "tag": tag,
        "steps": [r[0] for r in records],
        "step": step_taken,
        "methods": data["methods"],
        "advice": ADVICE,
        "misclassified": sum(item["correct"] is False for item in items),
        "items": items,
        "source": data.get("source"),
    }


def text(root: Served, run: str, tag: str) -> dict[str, Any]:
    """The text notes of a tag, in the order logged."""
    records = _records(root, run, tag, TEXT)
    return {"run": run, "tag": tag, "points": [{"step": t.step, "text": t.text} for t in records]}


# ---- projector --------------------------------------------------------------------------------------------------

# The projections the board computes when none is stored under the name: "<method>-<dim>d".
COMPUTED = tuple(f"{method}-{dim}d" for method in ("pca", "tsne", "umap") for dim in (2, 3))
# t-SNE and UMAP of a bigger embedding are computed on this many points drawn at random (seed 0), as TensorBoard's
# projector samples 10,000 for t-SNE: minutes on two cores already; PCA projects every point.
NONLINEAR_SAMPLE = 20_000
DEFAULT_NEIGHBORS = 10


def embeddings(root: Served, run: str) -> dict[str, Any]:
    """The embeddings of a run: ``{"run", "embeddings": [{"tag", "steps", "step", "n", "d", "columns",
    "thumbnails", "stored", "projections"}]}``, one per tag, describing its last step.

    ``columns``: the names of its label columns (``label``, ``prediction``, ...; ``correct`` is added by
    :func:`embedding_labels` when both of the first two exist); ``thumbnails``: whether it has images to hover;
    ``stored``: the names of its precomputed projections; ``projections``: those, then the computable
    ``pca-2d`` ... ``umap-3d`` not stored under the same name, in the order the page offers them.
    """
    served = _source(root)
    stamp = _stamp(served, run)
    key = (served.shown, run, "embeddings", stamp)
    found = ITEMS.get(key) if stamp is not None else None
    if found is not None:
        return {"run": run, "embeddings": found}
    with _reader(served, run) as reader:
        tags = sorted(tag for tag, kind in reader.tags().items() if kind == EMBEDDING)
        found = []
        for tag in tags:
            records = reader.files(tag)
            step, file, meta = records[-1]
            stored = list(meta.get("projections") or {})
            found.append(
                {
                    "tag": tag,
                    "steps": [r[0] for r in records],
                    "step": step,
                    "n": meta["shape"][0],
                    "d": meta["shape"][1],
                    "columns": _label_header(meta),
                    "thumbnails": "thumbnails" in _members(served.arrays(run, file), file),
                    "stored": stored,
                    "projections": stored + [name for name in COMPUTED if name not in stored],
                }
            )
    if stamp is not None:
        ITEMS.put(key, found)
    return {"run": run, "embeddings": found}


def embedding_labels(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """The label columns of an embedding, compactly: ``{"run", "tag", "step", "n", "columns": [{"name",
    "values": the distinct strings, sorted, "codes": {"dtype": "<u1" | "<u2" | "<i4", "base64"}: each point's
    index into values, in the smallest type that holds them}]}``. With both a ``label`` and a ``prediction``
    column, a ``correct`` column (``"wrong"`` / ``"right"``) follows them.
    """
    item = _embedding_item(root, run, tag, step)
    columns = _cached(item, "labels", lambda: _label_columns(item))
    return {
        "run": run,
        "tag": tag,
        "step": item.step,
        "n": item.n,
        "columns": [{"name": name, "values": v, "codes": _codes(codes, len(v))} for name, v, codes in columns],
    }


def projection(root: Served, run: str, tag: str, name: str, step: int | None = None) -> dict[str, Any]:
    """The 2D or 3D points of a projection of an embedding, computing it when it is not stored.

    A projection stored with the embedding under ``name`` comes as it is. Otherwise ``name`` is one of
    :data:`COMPUTED`: PCA is computed here and now; t-SNE and UMAP start in a background thread (one at a time)
    and the answer says how far they are, so ask again (or :func:`projection_status`) until ``status`` is
    ``"done"``. Computed points are kept in memory, keyed by the embedding file's path and modification time.

    ``{"run", "tag", "step", "name", "stored", "status": "done" | "queued" | "running" | "failed", "n",
    "dim", "seconds", "progress" (the fraction done, or null where the method does not say), "error", "points"}``:
    ``points`` (when done) is ``{"dtype": "<f4", "base64"}``, the row-major ``[n, dim]`` float32 points'
    little-endian bytes (8 bytes a 2D point, 1,000,000 points in 11 MB). ``sample``: ``None`` when every point is
    projected; for t-SNE and UMAP of more than :data:`NONLINEAR_SAMPLE` points, ``{"size", "indices"}``: the
    points are those of the ``size`` sampled items, whose indices (int32, increasing) come with the points.
    """
    item = _embedding_item(root, run, tag, step)
    stored = item.meta.get("projections") or {}
    if name in stored:
        points = _cached(item, f"projection:{name}", lambda: _load(item, stored[name][0]))
        return _job_answer(run, tag, item, name, True, int(stored[name][-1]), _Job("done", points), True)
    method, dim = _computable(run, tag, name, stored)
    return _job_answer(run, tag, item, name, False, dim, JOBS.start(item, name, method, dim), True)


def projection_status(root: Served, run: str, tag: str, name: str, step: int | None = None) -> dict[str, Any]:
    """:func:`projection`'s answer without the points, and without starting anything: ``status`` is
    ``"absent"`` for a computable projection nobody asked for yet."""
    item = _embedding_item(root, run, tag, step)
    stored = item.meta.get("projections") or {}
    if name in stored:
        return _job_answer(run, tag, item, name, True, int(stored[name][-1]), _Job("done"), False)
    _, dim = _computable(run, tag, name, stored)
    return _job_answer(run, tag, item, name, False, dim, JOBS.get(item, name) or _Job("absent"), False)


def neighbors(
    root: Served,
    run: str,
    tag: str,
    index: int,
    k: int = DEFAULT_NEIGHBORS,
    metric: str = "cosine",
    step: int | None = None,
) -> dict[str, Any]:
    """The ``k`` nearest points to point ``index`` in the embedding's original feature space (not in a
    projection), nearest first: ``{"run", "tag", "step", "index", "metric", "indices", "distances"}``, by
    :func:`deepscope.embed.neighbors` (brute force; ``metric`` ``"cosine"`` or ``"euclidean"``)."""
    import torch

    from ..embed import neighbors as nearest

    item = _embedding_item(root, run, tag, step)
    if not 0 <= index < item.n:
        raise BadInputError(f"index={index}: the embedding {tag!r} has points 0 to {item.n - 1}")
    features = torch.from_numpy(_cached(item, "features", lambda: _load(item, "features")))
    found = nearest(features, [index], k=k, metric=metric)  # type: ignore[arg-type]
    return {
        "run": run,
        "tag": tag,
        "step": item.step,
        "index": index,
        "metric": metric,
        "indices": found.indices[0].tolist(),
        "distances": _floats(found.distances[0].double().numpy()),
    }


def thumbnail(root: Served, run: str, tag: str, index: int, step: int | None = None) -> bytes:
    """The thumbnail of point ``index`` of an embedding as PNG bytes, for the projector's hover and lists."""
    from PIL import Image as PILImage

    item = _embedding_item(root, run, tag, step)
    if "thumbnails" not in _members(item.open(), item.file):
        raise NotFound(f"the embedding {tag!r} of run {run!r} has no thumbnails")
    if not 0 <= index < item.n:
        raise NotFound(f"the embedding {tag!r} of run {run!r} has no point {index}")
    if item.parquet:  # the row group that holds the point, not a million thumbnails
        pixels = _parquet_row(item, "thumbnails", index)
    else:
        pixels = _cached(item, "thumbnails", lambda: _load(item, "thumbnails"))[index]
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class _Item:
    """One embedding record, located: its file, stored description, step and size (nothing read yet)."""

    def __init__(self, served: Source, run: str, file: str, meta: dict[str, Any], step: int) -> None:
        self.served, self.run, self.file, self.meta, self.step = served, run, file, meta, step
        self.n = int(meta["shape"][0])
        # The file is written once under a fresh name, so where it is (and, on disk, its modification time) names
        # its contents.
        self.key = served.file_key(run, file)
        self.parquet = meta.get("format") == "parquet"  # else a .npz with the labels in meta

    def open(self) -> Any:
        """The file, for ``numpy.load``."""
        return self.served.arrays(self.run, self.file)

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return self.file.rsplit("/", 1)[-1]


def _embedding_item(root: Served, run: str, tag: str, step: int | None) -> _Item:
    """The embedding record of ``tag`` at ``step`` (default: the last), from :data:`ITEMS` while the run is
    unchanged: its description holds every label, so parsing it again would cost each hover ~0.2 s at 100,000."""
    served = _source(root)
    stamp = _stamp(served, run)
    key = (served.shown, run, tag, step, stamp)
    found = ITEMS.get(key) if stamp is not None else None
    if found is not None:
        return found
    with _reader(served, run) as reader:
        _check_kind(reader, run, tag, EMBEDDING)
        records = reader.files(tag)
        chosen_step, file, meta = _at_step(records, step, run, tag)
    try:
        item = _Item(served, run, file, meta, chosen_step)
    except (OSError, NotFound) as e:
        raise NotFound(f"the embedding {tag!r} of run {run!r} at step {chosen_step} is missing its file {file}") from e
    if stamp is not None:
        ITEMS.put(key, item)
    return item


class _Recent:
    """A thread-safe LRU of the last ``entries`` values (located records, listings), keyed by what names them and
    the run's :func:`_stamp`, so nothing stale is found again."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


ITEMS = _Recent(entries=16)


def _label_header(meta: dict[str, Any]) -> list[str]:
    if meta.get("format") == "parquet":
        return list(meta["columns"])
    labels = meta.get("labels")
    if labels is None:
        return []
    return list(meta.get("label_header") or (["label"] if not labels or isinstance(labels[0], str) else []))


def _label_columns(item: _Item) -> list[tuple[str, list[str], np.ndarray]]:
    """Each label column as its distinct values and every point's code into them (plus ``correct``)."""
    header = _label_header(item.meta)
    if item.parquet:
        if not header:
            return []
        read = _parquet_columns(item, [f"label:{name}" for name in header])
        table = np.stack(
            [np.asarray(read.column(i).to_numpy(zero_copy_only=False), dtype=str) for i in range(len(header))], axis=1
        )
    else:
        labels = item.meta.get("labels")
        if labels is None:
            return []
        table = np.asarray(labels, dtype=str).reshape(len(labels), -1)
    columns = []
    for i, name in enumerate(header):
        values, codes = np.unique(table[:, i], return_inverse=True)
        columns.append((name, values.tolist(), codes.reshape(-1)))
    if "label" in header and "prediction" in header and "correct" not in header:
        right = table[:, header.index("label")] == table[:, header.index("prediction")]
        columns.append(("correct", ["wrong", "right"], right.astype(np.int32)))
    return columns


def _computable(run: str, tag: str, name: str, stored: dict[str, Any]) -> tuple[str, int]:
    if name not in COMPUTED:
        raise NotFound(
            f"the embedding {tag!r} of run {run!r} has no projection {name!r}; stored: {list(stored) or 'none'}, "
            f"computed on request: {', '.join(COMPUTED)}"
        )
    method, dim = name.split("-")
    return method, int(dim[0])


def _members(file: Any, name: str) -> list[str]:
    """The arrays an embedding's file holds (a ``.npz``'s members, a Parquet file's columns)."""
    try:
        if name.endswith(".parquet"):
            return list(parquet.pyarrow().parquet.read_schema(file).names)
        with np.load(file) as arrays:
            return list(arrays.files)
    except (OSError, ValueError) as e:
        raise NotFound(f"{name.rsplit('/', 1)[-1]} cannot be read: {e}") from e


def _parquet_columns(item: _Item, columns: list[str]) -> Any:
    try:
        return parquet.pyarrow().parquet.read_table(item.open(), columns=columns)
    except (OSError, ValueError, KeyError) as e:  # pyarrow's errors are ValueError / OSError subclasses
        raise NotFound(f"{item.name} cannot be read: {e}") from e


def _shape(item: _Item, key: str) -> list[int]:
    """The item shape of an array column of a Parquet embedding (its metadata's)."""
    schema = parquet.pyarrow().parquet.read_schema(item.open())
    return list(parquet.described(schema.metadata, item.name)["shapes"][key])


def _parquet_row(item: _Item, key: str, index: int) -> np.ndarray:
    """Row ``index`` of an array column, reading only the row group that holds it."""
    file = parquet.pyarrow().parquet.ParquetFile(item.open())
    start = 0
    for group in range(file.num_row_groups):
        rows = file.metadata.row_group(group).num_rows
        if index < start + rows:
            column = file.read_row_group(group, columns=[key]).column(key)
            return parquet.column_array(column.slice(index - start, 1), _shape(item, key))[0]
        start += rows
    raise NotFound(f"{item.name} has no row {index}")


def _load(item: _Item, key: str) -> np.ndarray:
    if item.parquet:
        return parquet.column_array(_parquet_columns(item, [key]).column(key), _shape(item, key))
    try:
        with np.load(item.open()) as arrays:
            return arrays[key]
    except (OSError, ValueError, KeyError) as e:
        raise NotFound(f"{item.file.rsplit('/', 1)[-1]} cannot be read: {e}") from e


class _Arrays:
    """The arrays (and label codes) of the last few embeddings read, so hovering and clicking through a
    million points reads the file once, not per request."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], what: str, make: Any) -> Any:
        with self._lock:
            entry = self._items.setdefault(key, {})
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
            if what not in entry:
                entry[what] = make()  # under the lock: two viewers never read the same file twice at once
            return entry[what]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


ARRAYS = _Arrays(entries=2)


def _cached(item: _Item, what: str, make: Any) -> Any:
    return ARRAYS.get(item.key, what, make)


@dataclass
class _Job:
    """A projection being computed, or its result."""

    status: str
    points: np.ndarray | None = None
    error: str = ""
    started: float = 0.0
    seconds: float = 0.0
    progress: float | None = None  # the fraction done, where the method reports one (t-SNE: every 50 iterations)
    sample: np.ndarray | None = None  # the points projected, when a sample of them (t-SNE, UMAP of big embeddings)


class _Jobs:
    """Projections computed on the server: PCA at once, t-SNE / UMAP one at a time in background threads.

    Results are kept by (embedding file, mtime, name), at most ``max_bytes`` of points (least recently used go).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._jobs: OrderedDict[tuple[Any, ...], _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()  # t-SNE and UMAP use every core already

    def get(self, item: _Item, name: str) -> _Job | None:
        with self._lock:
            return self._jobs.get((*item.key, name))

    def start(self, item: _Item, name: str, method: str, dim: int) -> _Job:
        key = (*item.key, name)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                self._jobs.move_to_end(key)
                return job
            job = self._jobs[key] = _Job(
                status="queued",
                started=time.monotonic(),
                progress=0.0 if method == "tsne" else None,
                sample=_sample(item.n) if method != "pca" else None,
            )
        if method == "pca":  # seconds for a million points: answer at once (a bad input raises here: 422)
            try:
                self._run(item, job, method, dim)
            except BaseException:
                with self._lock:
                    self._jobs.pop(key, None)
                raise
        else:
            threading.Thread(target=self._background, args=(item, job, method, dim), daemon=True).start()
        return job

    def _background(self, item: _Item, job: _Job, method: str, dim: int) -> None:
        with self._one_at_a_time:
            try:
                self._run(item, job, method, dim)
            except Exception as e:  # shown on the page: a BadInputError says what to change
                job.error = f"{type(e).__name__}: {e}" if not isinstance(e, BadInputError) else str(e)
                job.status = "failed"

    def _run(self, item: _Item, job: _Job, method: str, dim: int) -> None:
        from ..embed import project

        job.status, job.started = "running", time.monotonic()
        features = _cached(item, "features", lambda: _load(item, "features"))
        if job.sample is not None:
            features = features[job.sample]

        def advanced(fraction: float) -> None:
            job.progress = fraction

        result = project(  # type: ignore[call-overload]
            features, method=method, dim=dim, progress=False, quality=False, on_progress=advanced
        )
        job.points = np.ascontiguousarray(result.points.numpy(), dtype=np.float32)  # type: ignore[union-attr]
        job.seconds = time.monotonic() - job.started
        job.status = "done"
        self._trim()

    def _trim(self) -> None:
        with self._lock:
            total = 0
            for key in reversed(list(self._jobs)):
                points = self._jobs[key].points
                total += points.nbytes if points is not None else 0
                if total > self.max_bytes:
                    del self._jobs[key]


JOBS = _Jobs(max_bytes=512 * 2**20)


def _sample(n: int) -> np.ndarray | None:
    """The points t-SNE or UMAP projects of ``n``: all (``None``) up to :data:`NONLINEAR_SAMPLE`, else that many
    drawn at random (seed 0: every viewer and every restart sees the same ones), in increasing order."""
    if n <= NONLINEAR_SAMPLE:
        return None
    return np.sort(np.random.default_rng(0).choice(n, NONLINEAR_SAMPLE, replace=False)).astype(np.int32)


def _job_answer(
    run: str, tag: str, item: _Item, name: str, stored: bool, dim: int, job: _Job, with_points: bool
) -> dict[str, Any]:
    done, points = job.status == "done", job.points
    running = job.status in ("queued", "running")
    return {
        "run": run,
        "tag": tag,
        "step": item.step,
        "name": name,
        "stored": stored,
        "status": job.status,
        "n": item.n,
        "dim": dim,
        "seconds": round(job.seconds if done else time.monotonic() - job.started if running else 0.0, 3),
        "progress": 1.0 if done else job.progress,
        "error": job.error,
        "points": _packed32(points) if with_points and points is not None else None,
        "sample": None
        if job.sample is None
        else {"size": len(job.sample), "indices": _packed32(job.sample) if with_points and done else None},
    }


def _codes(codes: np.ndarray, count: int) -> dict[str, str]:
    """Codes into ``count`` values in the smallest type that holds them: a million labels of 10 classes in 1.3 MB."""
    dtype = "<u1" if count <= 2**8 else "<u2" if count <= 2**16 else "<i4"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(codes, dtype=dtype).tobytes()).decode()}


def _packed32(values: np.ndarray) -> dict[str, str]:
    """Like :func:`_packed`, in 32 bits (``<f4`` or ``<i4``): half the bytes, plenty for positions and codes."""
    dtype = "<f4" if values.dtype.kind == "f" else "<i4"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode()}


# ---- files ---------------------------------------------------------------------------------------------------


def file_url(run: str, path: str) -> str:
    """The address of a run's file (:func:`file_path`) as the API hands it out: relative (``api/file?...``, no
    leading ``/``), so the page resolves it against its own address and it works under any path prefix (a board
    behind JupyterHub's or VS Code's proxy is served at ``/user/<name>/proxy/<port>/``)."""
    return "api/file?" + urlencode({"run": run, "path": path})


# ---- plumbing ---------------------------------------------------------------------------------------------------


def _source(root: Served) -> Source:
    """What a view reads from: a path names a directory of runs."""
    return root if not isinstance(root, Path) else source(root)


@contextmanager
def _reader(root: Served, run: str) -> Iterator[Reader]:
    """An open reader of the run, with every failure to read as :class:`NotFound`; closed afterwards."""
    served = _source(root)
    try:
        with served.reader(run) as reader:
            yield reader
    except BadInputError as e:  # an unknown tag, or one of another kind
        raise NotFound(str(e)) from e
    except StoreError as e:
        raise NotFound(f"run {run!r} cannot be read: {e}") from e


def _check_kind(reader: Reader, run: str, tag: str, kind: str) -> None:
    """:class:`NotFound` unless the run has ``tag`` and it holds records of ``kind``."""
    found = reader.tags().get(tag)
    if found != kind:
        held = f" (it holds {found} records)" if found else ""
        raise NotFound(f"run {run!r} has no {kind} tag {tag!r}{held}")


def _records(root: Served, run: str, tag: str, kind: str) -> list[Any]:
    """The records of a tag of the given kind (for images: their files, unread), or :class:`NotFound`."""
    with _reader(root, run) as reader:
        _check_kind(reader, run, tag, kind)
        return reader.files(tag) if kind in (IMAGE, EXPLANATION) else reader.records(tag)


def _at_step(records: list[Any], step: int | None, run: str, tag: str) -> Any:
    """The last record logged at ``step`` (records, or ``(step, file, data)`` rows), the last of all for ``None``."""
    steps = [r[0] if isinstance(r, tuple) else r.step for r in records]
    if step is None and records:
        return records[-1]
    if step in steps:
        return records[len(steps) - 1 - steps[::-1].index(step)]
    raise NotFound(f"run {run!r} has no {tag!r} record at step {step}" + (f"; its steps: {steps}" if steps else ""))


class EncodedCache:
    """A thread-safe LRU of encoded answers, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


# About 100 KB per run and tag at 2,000 points: room for a few hundred series.
ENCODED = EncodedCache(64 * 2**20)
# The answers of runs being written, shared by the viewers that ask at the same time (never an older one).
LIVE = Shared()


def _scalars_encoded(
    served: Source,
    run: str,
    tag: str,
    start: int | None,
    end: int | None,
    max_points: int,
    encoding: str,
    stamp: tuple[Any, ...] | None,
) -> bytes:
    """The bytes ``/api/scalars`` sends for one run, from :data:`ENCODED` when the run cannot have changed (its
    ``stamp``, taken before reading, is ``None`` while it is written)."""
    key = (served.shown, run, tag, start, end, max_points, encoding, stamp)
    if stamp is None:  # being written: read for this call, or with the calls that asked at the same time
        live: bytes = LIVE.get(key, lambda: _dumps(scalars(served, run, tag, start, end, max_points, encoding)))
        return live
    found = ENCODED.get(key)
    if found is None:
        found = _dumps(scalars(served, run, tag, start, end, max_points, encoding))
        ENCODED.put(key, found)
    return found


def _stamp(served: Source, run: str) -> tuple[Any, ...] | None:
    """What changes whenever the run's data does; ``None`` while a writer holds the run (it may change any time)."""
    return served.stamps([run])[0]


def _dumps(value: Any) -> bytes:
    """Compact JSON, as the server sends it; non-finite floats must already be strings."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def _check_scalar_options(max_points: int, encoding: str) -> None:
    if max_points < 4:
        raise BadInputError(f"max_points must be at least 4, not {max_points}")
    if encoding not in ENCODINGS:
        raise BadInputError(f"encoding={encoding!r}: pass one of {', '.join(map(repr, ENCODINGS))}")


def _packed(values: np.ndarray) -> dict[str, str]:
    """An int64 or float64 array as ``{"dtype", "base64"}``: its little-endian bytes, base64-encoded."""
    dtype = "<f8" if values.dtype.kind == "f" else "<i8"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode()}


def _float(x: float) -> float | str:
    if math.isfinite(x):
        return float(x)
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _floats(values: np.ndarray) -> list[float | str]:
    out: list[float | str] = values.tolist()
    bad = np.flatnonzero(~np.isfinite(values))
    for i in bad.tolist():  # usually none: keep the common case a single tolist()
        out[i] = _float(out[i])  # type: ignore[arg-type]
    return out


def _clean(value: Any) -> Any:
    """A JSON value with every non-finite float replaced by its string name."""
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def served_root(root: str | os.PathLike[str] | Source) -> Source:
    """What ``root`` names (:func:`~deepscope.dashboard.sources.source`): a directory of runs, or a PostgreSQL URL's
    database; a :class:`BadInputError` saying what is wrong with it."""
    return source(root)
