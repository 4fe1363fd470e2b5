"""What the Features view answers: a run's feature pictures by layer (their tags and steps; pixels via images)."""

from __future__ import annotations

from typing import Any

from ....store.records.image import KIND as IMAGE
from ....store.records.scalar import KIND as SCALAR
from ...common import Served, floats, natural_key, open_reader
from ..scalars.data import DEFAULT_MAX_POINTS

# The Features tab: image tags ``features/<layer>/<what>`` (``what``: filters, maximize, top_patches, or one unit's
# ``top_patches/<unit>``, ...), scalars ``features/<layer>/<what>/<name>`` beside them (the filters' ``noise``); see
# deepscope.features.features_tag.
FEATURES_PREFIX = "features/"


def features(root: Served, run: str) -> dict[str, Any]:
    """The run's feature pictures by layer, for the Features tab: ``{"run", "steps", "layers": [{"layer", "kinds":
    [{"what", "tag", "steps", "scalars": {name: {"steps", "values"}}}]}]}``, layers and kinds sorted by
    name, numbers as numbers (``top_patches/2`` before ``top_patches/10``).

    Only tags and steps (and the few scalars beside them, e.g. the filters' mean noise score); the pictures
    themselves come from :func:`images` under each kind's ``tag``.
    """
    layers: dict[str, list[dict[str, Any]]] = {}
    every_step: set[int] = set()
    with open_reader(root, run) as reader:
        tags = reader.tags()
        for tag in sorted((tag for tag, kind in tags.items() if kind == IMAGE), key=natural_key):
            parsed = feature(tag)
            if parsed is None:
                continue
            steps = sorted({step for step, _, _ in reader.files(tag)})
            every_step.update(steps)
            scalars = {}
            for name in sorted(
                (t for t, k in tags.items() if k == SCALAR and t.startswith(tag + "/")), key=natural_key
            ):
                series = reader.scalars(name, max_points=DEFAULT_MAX_POINTS)
                scalars[name[len(tag) + 1 :]] = {"steps": series.steps.tolist(), "values": floats(series.values)}
            layers.setdefault(parsed[0], []).append({"what": parsed[1], "tag": tag, "steps": steps, "scalars": scalars})
    return {
        "run": run,
        "steps": sorted(every_step),
        "layers": [{"layer": name, "kinds": layers[name]} for name in sorted(layers, key=natural_key)],
    }


def feature(tag: str) -> tuple[str, str] | None:
    """``(layer, what)`` of a Features tag ``features/<layer>/<what>``, else ``None``. A layer's name has no ``/``
    (module names use dots); ``what`` may: ``top_patches/5`` from ``TopPatches.to_records``, one per unit."""
    if not tag.startswith(FEATURES_PREFIX):
        return None
    layer, _, what = tag[len(FEATURES_PREFIX) :].partition("/")
    return (layer, what) if layer and what else None
