"""What the Explanations view answers: an explanation set at a step, item by item."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import BadInputError
from ....store.records.explanation import KIND as EXPLANATION
from ....store.records.scalar import KIND as SCALAR
from ...common import (
    NotFound,
    Served,
    as_float,
    at_step,
    check_kind,
    file_url,
    floats,
    open_reader,
    readable_records,
    records_of,
)

# The points of the loss curve beside a probe (the Scalars view's default).
LOSS_POINTS = 2000

# Seed 000's advice, shown above the explanation gallery.
ADVICE = "Do not focus only on cases that are classified correctly: deep neural networks are prone to taking shortcuts."


def explanations(root: Served, run: str, tag: str, step: int | None = None) -> dict[str, Any]:
    """The explanation gallery at ``step`` (default: the last set logged under the tag): per input its picture,
    true label, prediction, whether they agree, and per method the overlay and heatmap with what it explained.

    ``{"run", "tag", "steps", "step", "methods", "advice", "misclassified": count, "items": [{"index", "label",
    "prediction", "correct": true/false/null (unknown without labels or predictions), "input": url, "maps":
    [{"method", "target", "score", "overlay": url, "heatmap": url}]}], "source"}``; each url is :func:`file_url`'s.

    A sample of an explained data set (``ds.explain_dataset``) numbers its items by their ids in the data set, and
    ``source`` says where every item is: ``{"path", "items", "misclassified"}`` (``None`` for other sets).
    """
    records, unreadable = readable_records(root, run, tag, EXPLANATION)
    step_taken, _, data = at_step(records, step, run, tag, unreadable)

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
                "score": as_float(float(data["scores"][m][i])),
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
        "unreadable": unreadable,
        "steps": [r[0] for r in records],
        "step": step_taken,
        "methods": data["methods"],
        "advice": ADVICE,
        "misclassified": sum(item["correct"] is False for item in items),
        "items": items,
        "source": data.get("source"),
    }


def probe(root: Served, run: str, tag: str, index: int = 0, loss: str | None = None) -> dict[str, Any]:
    """One input of an explanation tag through every step it was explained at (probes during training,
    ``run.watch(probes=...)``): per step what the model predicted, whether that was right and each method's maps;
    beside it a loss curve of the run and its value at each of those steps.

    ``index`` is the input's place in the set (0 for the first). ``loss`` is a scalar tag of the run; by default
    ``train/loss`` if there is one, else the first scalar tag (sorted) whose name holds "loss", else none.

    ``{"run", "tag", "index", "label", "input": url, "methods", "steps", "frames": [{"step", "prediction",
    "correct": true/false/null, "loss": the loss's last point at or before the step (or None), "maps":
    [{"method", "target", "score", "overlay", "heatmap"}]}], "loss": {"tag", "steps", "values"} or None,
    "losses": the run's scalar tags holding "loss"}``.
    """
    records = records_of(root, run, tag, EXPLANATION)
    if not records:
        raise NotFound(f"run {run!r} has no {tag!r} records")
    sizes = [len(data["inputs"]) for _, _, data in records]
    if isinstance(index, bool) or not 0 <= index < min(sizes):
        raise BadInputError(
            f"index={index}: the sets of {tag!r} hold {min(sizes)} inputs; choose 0 to {min(sizes) - 1}"
        )
    with open_reader(root, run) as reader:
        losses = sorted(t for t in reader.tags("scalar") if "loss" in t.lower())
        chosen = loss if loss is not None else ("train/loss" if "train/loss" in losses else next(iter(losses), None))
        if chosen is not None:
            check_kind(reader, run, chosen, SCALAR)
            every = reader.scalars(chosen)  # every point: the value at each probed step, exactly
            order = np.argsort(every.steps, kind="stable")  # a restarted loop's points come in the order logged
            points, values = every.steps[order], every.values[order]
            curve = reader.scalars(chosen, max_points=LOSS_POINTS)  # what the chart draws
    frames = []
    for step, _, data in records:
        labels, predictions = data.get("labels"), data.get("predictions")
        label = labels[index] if labels else None
        prediction = predictions[index] if predictions else None
        correct = None if label is None or prediction is None else label == prediction
        at = None
        if chosen is not None:
            k = int(np.searchsorted(points, step, side="right")) - 1
            at = as_float(float(values[k])) if k >= 0 else None
        maps = [
            {
                "method": method,
                "target": data["targets"][m][index],
                "score": as_float(float(data["scores"][m][index])),
                "overlay": file_url(run, data["overlays"][m][index]),
                "heatmap": file_url(run, data["heatmaps"][m][index]),
            }
            for m, method in enumerate(data["methods"])
        ]
        frames.append({"step": step, "prediction": prediction, "correct": correct, "loss": at, "maps": maps})
    last = records[-1][2]
    labels = last.get("labels")
    return {
        "run": run,
        "tag": tag,
        "index": index,
        "label": labels[index] if labels else None,
        "input": file_url(run, last["inputs"][index]),
        "methods": last["methods"],
        "steps": [f["step"] for f in frames],
        "frames": frames,
        "loss": None
        if chosen is None
        else {"tag": chosen, "steps": curve.steps.tolist(), "values": floats(curve.values)},
        "losses": losses,
    }
