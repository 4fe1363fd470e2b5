"""What the Explanations view answers: an explanation set at a step, item by item."""

from __future__ import annotations

from typing import Any

from ....store.records.explanation import KIND as EXPLANATION
from ...common import Served, as_float, at_step, file_url, records_of

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
    records = records_of(root, run, tag, EXPLANATION)
    step_taken, _, data = at_step(records, step, run, tag)

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
        "steps": [r[0] for r in records],
        "step": step_taken,
        "methods": data["methods"],
        "advice": ADVICE,
        "misclassified": sum(item["correct"] is False for item in items),
        "items": items,
        "source": data.get("source"),
    }
