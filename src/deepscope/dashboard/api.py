"""What the board's JSON API answers: pure functions from a served directory to JSON-able values, one per view.

Nothing here knows about HTTP; :mod:`deepscope.dashboard.server` maps each function to a route and
:class:`NotFound` to a 404. Data is read only through :class:`deepscope.store.Reader`, opened anew for each call,
so a call sees the runs and points written since the last one. A run name or a file path from a request is
resolved by :func:`run_dir` and :func:`file_path`, which refuse anything outside the served directory.

Adding a view: one function here, one route in ``server.py``, one key in :data:`VIEWS`, one page section.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from ..errors import BadInputError, StoreError
from ..store import Reader, list_runs, schema

# Tab name -> the tag kind whose presence in any run makes the tab appear.
VIEWS: dict[str, str] = {
    "scalars": "scalar",
    "distributions": "histogram",
    "graph": "graph",
    "images": "image",
    "text": "text",
}

DEFAULT_MAX_POINTS = 2000


class NotFound(LookupError):
    """A run, tag or file that the request names does not exist in the served directory (HTTP 404)."""


# ---- views ------------------------------------------------------------------------------------------------------


def runs(root: Path) -> list[dict[str, Any]]:
    """Every run under ``root``, sorted by name: ``{"name", "status", "created_at", "tags": {tag: kind}, "error"}``.

    Reads each run's info and tag list only, never a series; an unreadable run is listed with status
    ``"unreadable"`` and the reason in ``error``.
    """
    return [
        {"name": run.name, "status": run.status, "created_at": run.created_at, "tags": run.tags, "error": run.error}
        for run in list_runs(root)
    ]


def views(root: Path) -> dict[str, bool]:
    """Which tabs have data in at least one run."""
    kinds = {kind for run in list_runs(root) for kind in run.tags.values()}
    return {view: kind in kinds for view, kind in VIEWS.items()}


def scalars(
    root: Path,
    run: str,
    tag: str,
    start: int | None = None,
    end: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """The points of a scalar tag with ``start <= step <= end``, downsampled to at most ``max_points``.

    Non-finite values become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no NaN).
    """
    if max_points < 4:
        raise BadInputError(f"max_points must be at least 4, not {max_points}")
    with _reader(root, run) as reader:
        series = reader.scalars(tag, start=start, end=end, max_points=max_points)
    return {
        "run": run,
        "tag": tag,
        "steps": series.steps.tolist(),
        "values": _floats(series.values),
        "epochs": series.epochs.tolist(),
        "wall_times": _floats(series.wall_times),
        "total": series.total,
        "downsampled": series.downsampled,
    }


def histograms(root: Path, run: str, tag: str) -> dict[str, Any]:
    """Every histogram of a tag, in the order logged, with its bins and summary statistics."""
    records = _records(root, run, tag, "histogram")
    first = records[0] if records else None
    return {
        "run": run,
        "tag": tag,
        "layer": first.layer if first else "",
        "kind": first.kind if first else "other",
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


def graph(root: Path, run: str, tag: str = "model") -> dict[str, Any]:
    """The model graph stored under ``tag`` (the last one, if logged more than once)."""
    records = _records(root, run, tag, "graph")
    if not records:
        raise NotFound(f"run {run!r} has no graph under {tag!r}")
    g = records[-1]
    return _clean({"run": run, "tag": tag, "modules": g.modules, "ops": g.ops, "ops_method": g.ops_method})


def images(root: Path, run: str, tag: str) -> dict[str, Any]:
    """The images of a tag, in the order logged: step, size, caption and the URL of the PNG (:func:`file_path`)."""
    points = []
    for step, file, meta in _records(root, run, tag, "image"):
        height, width = (meta.get("shape") or [0, 0])[:2]
        url = "/api/file?" + urlencode({"run": run, "path": file})
        points.append({"step": step, "url": url, "width": width, "height": height, "caption": meta.get("caption", "")})
    return {"run": run, "tag": tag, "points": points}


def text(root: Path, run: str, tag: str) -> dict[str, Any]:
    """The text notes of a tag, in the order logged."""
    records = _records(root, run, tag, "text")
    return {"run": run, "tag": tag, "points": [{"step": t.step, "text": t.text} for t in records]}


# ---- paths: nothing outside the served directory ----------------------------------------------------------------


def run_dir(root: Path, run: str) -> Path:
    """The directory of run ``run`` (a name as :func:`runs` lists it) under ``root``.

    Raises:
        NotFound: for an empty, absolute or ``..`` name, a name that leads outside ``root`` (through a symlink
            too), or a directory that holds no run.
    """
    parts = _parts(run)
    if parts is None:
        raise NotFound(f"no run named {run!r}")
    base = root.resolve()
    # A run at the root itself is listed under the root's own name (as list_runs does).
    candidate = base if run == base.name and schema.db_path(base).is_file() else base.joinpath(*parts)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base) or not schema.db_path(resolved).is_file():
        raise NotFound(f"no run named {run!r}")
    return resolved


def file_path(root: Path, run: str, path: str) -> Path:
    """A file of a run's ``files/`` directory, given by its path relative to the run directory.

    Raises:
        NotFound: for a path that is absolute, contains ``..``, leaves the run's ``files/`` (through a symlink
            too), or is not a file.
    """
    directory = run_dir(root, run)
    parts = _parts(path)
    if parts is None:
        raise NotFound(f"run {run!r} has no file {path!r}")
    files = (directory / schema.FILES_DIR).resolve()
    resolved = directory.joinpath(*parts).resolve()
    if not resolved.is_relative_to(files) or not resolved.is_file():
        raise NotFound(f"run {run!r} has no file {path!r}")
    return resolved


def _parts(name: str) -> list[str] | None:
    """The ``/``-separated parts of a relative name, or ``None`` for an absolute one or one with ``..``, ``.``,
    empty parts, backslashes or NUL (nothing a run name or a stored file path ever holds)."""
    parts = name.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    return parts


# ---- plumbing ---------------------------------------------------------------------------------------------------


@contextmanager
def _reader(root: Path, run: str) -> Iterator[Reader]:
    """An open reader of the run, with every failure to read as :class:`NotFound`; closed afterwards."""
    directory = run_dir(root, run)
    try:
        with Reader(directory) as reader:
            yield reader
    except BadInputError as e:  # an unknown tag, or one of another kind
        raise NotFound(str(e)) from e
    except StoreError as e:
        raise NotFound(f"run {run!r} cannot be read: {e}") from e


def _records(root: Path, run: str, tag: str, kind: str) -> list[Any]:
    """The records of a tag of the given kind (for images: their files, unread), or :class:`NotFound`."""
    with _reader(root, run) as reader:
        found = reader.tags().get(tag)
        if found != kind:
            held = f" (it holds {found} records)" if found else ""
            raise NotFound(f"run {run!r} has no {kind} tag {tag!r}{held}")
        return reader.files(tag) if kind == "image" else reader.records(tag)


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


def served_root(root: str | os.PathLike[str]) -> Path:
    """``root`` as an absolute directory, or a :class:`BadInputError` saying what is wrong with it."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise BadInputError(f"{path} is not a directory: give the directory that holds your runs")
    return path.resolve()
