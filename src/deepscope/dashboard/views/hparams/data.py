"""What the HParams view answers: each configured run's flattened configuration and a summary of chosen scalars.

A run's configuration is what ``Run(config=...)``, ``run.config[key] = ...``, ``SummaryWriter.add_hparams`` and
Lightning's ``log_hyperparams`` store (:meth:`deepscope.store.Reader.config`); nested dicts are flattened to dotted
names (``{"optim": {"lr": 0.1}}`` is ``optim.lr``). The view's state (:class:`HParams`) keeps what was read of each
run no writer holds, keyed by its change token, so a poll over 500 finished runs costs one ``stat`` each. A
directory's listing reads each run's config with its tags (:class:`~deepscope.store.RunSummary`): whether the tab
appears costs nothing more than the listing, and a run is opened only for the metrics summarised.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ....errors import BadInputError
from ....store import RunSummary
from ....store.records.scalar import KIND as SCALAR
from ...common import NotFound, Recent, Served, as_float, natural_key, open_reader, source_of
from ...sources import Listing, Source

# Metrics chosen when the page names none: the first few scalar tags that look like one, else the first few.
DEFAULT_METRICS = 4
_LOOKS_LIKE_METRIC = re.compile(r"loss|acc|error|err\b|f1|auc|score|precision|recall|perplexity", re.IGNORECASE)


class HParams:
    """The view's per-app state: per run no writer holds, its flattened config and the summaries read so far."""

    def __init__(self, entries: int = 8192) -> None:
        self.runs = Recent(entries)

    def clear(self) -> None:
        self.runs.clear()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A configuration as ``{dotted name: value}``: nested mappings flattened, numbers, strings, booleans and
    ``None`` as they are (non-finite floats as their names), anything else (lists, ...) as its JSON text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, float):
            out[name] = as_float(value)
        elif value is None or isinstance(value, str | int | bool):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True, default=str)
    return out


def summary(steps: np.ndarray, values: np.ndarray) -> dict[str, Any] | None:
    """``{"last", "step", "min", "max", "count"}`` of a series: its last value and step, the least and greatest of
    its finite values (``None`` without any); ``None`` for an empty series."""
    if not len(steps):
        return None
    finite = values[np.isfinite(values)]
    return {
        "last": as_float(float(values[-1])),
        "step": int(steps[-1]),
        "min": float(finite.min()) if len(finite) else None,
        "max": float(finite.max()) if len(finite) else None,
        "count": len(values),
    }


def _entry(served: Source, run: RunSummary, stamp: Any, state: HParams, metrics: Sequence[str]) -> dict[str, Any]:
    """What was read of a run (its config, and the summaries of ``metrics`` it holds), from ``state`` while it is
    unchanged; reads only what is missing. ``stamp``: the run's change token, taken before ``run`` was listed (a
    config the listing read is kept under it)."""
    key = (served.shown, run.name, stamp)
    entry = state.runs.get(key) if stamp is not None else None
    wanted = [m for m in metrics if run.tags.get(m) == SCALAR]
    if entry is not None and all(m in entry["metrics"] for m in wanted):
        return entry
    entry = entry or {"config": None if run.config is None else flatten(run.config), "metrics": {}}
    missing = [m for m in wanted if m not in entry["metrics"]]
    if entry["config"] is None or missing:
        with open_reader(served, run.name) as reader:
            if entry["config"] is None:
                entry["config"] = flatten(reader.config())
            for metric in missing:
                series = reader.scalars(metric)
                entry["metrics"][metric] = summary(series.steps, series.values)
    if stamp is not None:
        state.runs.put(key, entry)
    return entry


def _configured(served: Source, listing: Listing, state: HParams, metrics: Sequence[str]) -> list[Any]:
    """``[(run, entry)]`` of every readable run with a non-empty config; a run that cannot be read is left out
    (``/api/runs`` lists it with its reason)."""
    found = []
    for run in listing.runs:
        if run.status == "unreadable" or (run.config is not None and not run.config):
            continue  # unreadable, or listed with an empty config: nothing to read
        try:
            entry = _entry(served, run, listing.stamps.get(run.name), state, metrics)
        except NotFound:
            continue
        if entry["config"]:
            found.append((run, entry))
    return found


def is_active(served: Source, runs: list[RunSummary], state: HParams) -> bool:
    """Some readable run has a config: known from the listing where it read the configs (a directory's), else read
    (a run at a time, until one has)."""
    readable = [run for run in runs if run.status != "unreadable"]
    if any(run.config for run in readable):
        return True
    unknown = [run for run in readable if run.config is None]
    if not unknown:
        return False
    stamps = served.stamps([run.name for run in unknown])
    listing = Listing(unknown, {run.name: token for run, token in zip(unknown, stamps)})
    return bool(_configured(served, listing, state, ()))


def warm(served: Source, runs: list[RunSummary], state: HParams) -> None:
    """Read what the table's first answer needs (every configured run's config and default metrics' summaries) into
    ``state``, as the server starts."""
    hparams(served, None, state)


def hparams(root: Served, metrics: Sequence[str] | None = None, state: HParams | None = None) -> dict[str, Any]:
    """Every run with a config, its flattened config and a summary of each chosen metric.

    ``{"hparams": every config name, "metrics": every scalar tag of those runs, "chosen": the metrics summarised
    (``metrics``, else a few scalar tags named like one: loss, acc, ...), "runs": [{"name", "status", "config":
    {name: value}, "metrics": {tag: {"last", "step", "min", "max", "count"} or null}}]}``; names and tags in
    natural order (``lr_2`` before ``lr_10``), runs by name.

    Raises:
        BadInputError: a metric that is no scalar tag of a configured run (the message lists close ones).
    """
    served = source_of(root)
    state = state or HParams()
    listing = served.listing()
    configured = _configured(served, listing, state, ())
    tags = sorted({t for run, _ in configured for t, kind in run.tags.items() if kind == SCALAR}, key=natural_key)
    if metrics:
        unknown = [m for m in metrics if m not in tags]
        if unknown:
            close = difflib.get_close_matches(unknown[0], tags, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; the scalar tags: {tags[:20]}"
            raise BadInputError(f"metric {unknown[0]!r} is no scalar tag of a run with a config{hint}")
        chosen = list(dict.fromkeys(metrics))
    else:
        chosen = [t for t in tags if _LOOKS_LIKE_METRIC.search(t)][:DEFAULT_METRICS] or tags[:DEFAULT_METRICS]
    if chosen:
        configured = _configured(served, listing, state, chosen)
    names = sorted({name for _, entry in configured for name in entry["config"]}, key=natural_key)
    runs = [
        {
            "name": run.name,
            "status": run.status,
            "config": entry["config"],
            "metrics": {m: entry["metrics"].get(m) for m in chosen},
        }
        for run, entry in configured
    ]
    return {"hparams": names, "metrics": tags, "chosen": chosen, "runs": runs}


def config_diff(root: Served, first: str, second: str, state: HParams | None = None) -> dict[str, Any]:
    """The configuration names whose values differ between two runs (or that one of them lacks):
    ``{"runs": [first, second], "rows": [{"name", "values": [first's, second's], "only": null | 0 | 1}], "same":
    how many names hold equal values}``, names in natural order; ``only`` says which run alone has the name."""
    served = source_of(root)
    state = state or HParams()
    listing = served.listing()
    listed = {run.name: run for run in listing.runs}
    configs = []
    for name in (first, second):
        run = listed.get(name)
        if run is None:
            close = difflib.get_close_matches(name, list(listed), n=3)
            raise NotFound(f"no run {name!r}" + (f"; close: {', '.join(map(repr, close))}" if close else ""))
        configs.append(_entry(served, run, listing.stamps.get(name), state, ())["config"])
    a, b = configs
    rows = []
    same = 0
    for key in sorted(set(a) | set(b), key=natural_key):
        if key in a and key in b and _equal(a[key], b[key]):
            same += 1
            continue
        only = None if key in a and key in b else 0 if key in a else 1
        rows.append({"name": key, "values": [a.get(key), b.get(key)], "only": only})
    return {"runs": [first, second], "rows": rows, "same": same}


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y) and type(x) is type(y)
