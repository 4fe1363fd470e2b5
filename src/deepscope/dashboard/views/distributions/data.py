"""What the Distributions view answers: the histograms of a tag, in a step window."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import BadInputError
from ....store.records.histogram import KIND as HISTOGRAM
from ...common import Served, as_float, check_kind, open_reader

# Histograms per series sent at most by default (TensorBoard keeps 500 too); ask for a step window to see more.
DEFAULT_MAX_STEPS = 500

# run.watch(model) tags its histograms "<kind>/<parameter or module name>" (deepscope.track.watch); the page's
# picker groups them by that prefix, and every other histogram tag (logged by hand) under "other".
HISTOGRAM_GROUPS = (
    ("weight/", "weights"),
    ("bias/", "biases"),
    ("gradient/", "gradients"),
    ("activation/", "activations"),
)


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
    with open_reader(root, run) as reader:
        check_kind(reader, run, tag, HISTOGRAM)
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
                "low": as_float(h.low),
                "high": as_float(h.high),
                "counts": np.asarray(h.counts).tolist(),
                "mean": as_float(h.mean),
                "std": as_float(h.std),
                "zero_fraction": as_float(h.zero_fraction),
                "norm": as_float(h.norm),
                "count": h.count,
            }
            for h in records
        ],
    }
