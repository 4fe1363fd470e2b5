"""What the Scalars view answers: a scalar tag's points (one run, or many at once) and the custom-scalars layouts."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

from ....errors import BadInputError
from ....store import RunSummary
from ....store.records.layout import KIND as LAYOUT
from ....store.records.layout import pattern_error, scalar_layout
from ....store.records.scalar import KIND as SCALAR
from ...common import (
    EncodedCache,
    NotFound,
    Served,
    Unreadable,
    dumps,
    floats,
    natural_key,
    open_reader,
    packed,
    source_of,
)
from ...sources import Source

DEFAULT_MAX_POINTS = 2000
# The page's budget of points per chart, shared by the runs overlaid in it (each run gets a power of two between
# MIN_POINTS and DEFAULT_MAX_POINTS: view.js reads these in its conventions, `pointsPerRun`). A chart is about 1,000
# px wide: more points only cost drawing time (100 overlaid runs 512 each, where 1,024 each drew 0.3 s slower and
# looked the same); the min/max downsampling keeps every spike, and zooming in asks again for the visible range.
CHART_POINTS = 64000
MIN_POINTS = 64
# How a scalar answer's four arrays are sent: JSON numbers, or each array's little-endian bytes in base64.
ENCODINGS = ("json", "base64")
# About 100 KB per run and tag at 2,000 points: room for a few hundred series.
ENCODED_BYTES = 64 * 2**20


def points_per_run(runs: int) -> int:
    """The points per run the page asks when ``runs`` runs are overlaid in one chart (view.js ``pointsPerRun``)."""
    share = 2 ** ((CHART_POINTS // max(runs, 1)).bit_length() - 1) if runs <= CHART_POINTS else 0
    return max(MIN_POINTS, min(DEFAULT_MAX_POINTS, share))


def warm(served: Source, runs: list[RunSummary], cache: EncodedCache) -> None:
    """Encode into ``cache``, as the server starts, what a page opening the Scalars view asks first: each scalar tag
    of every run no writer holds, at the page's points per run, until half the cache's budget is used. A first visit
    then finds its series read, downsampled and encoded (TensorBoard reads its logdir as it starts, alike)."""
    tagged: dict[str, list[str]] = {}
    for run in runs:
        for tag, kind in run.tags.items():
            if kind == SCALAR:
                tagged.setdefault(tag, []).append(run.name)
    names = sorted({name for named in tagged.values() for name in named})
    stamps = dict(zip(names, served.stamps(names)))  # once per run, not once per run and tag
    for tag in sorted(tagged, key=natural_key):  # the page's order: the first charts first
        points = points_per_run(len(tagged[tag]))
        for run in tagged[tag]:
            if cache.nbytes > cache.max_bytes // 2:
                return
            stamp = stamps[run]
            if stamp is None:  # being written: the page asks for it live
                continue
            with contextlib.suppress(Unreadable, NotFound):  # the page's own request says what is wrong
                _scalars_encoded(served, run, tag, None, None, points, "base64", stamp, cache)


def encoded_cache() -> EncodedCache:
    """The view's per-app state: the encoded answers of runs no writer holds (:func:`scalars_batch_json`)."""
    return EncodedCache(ENCODED_BYTES)


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
    check_scalar_options(max_points, encoding)
    with open_reader(root, run) as reader:
        series = reader.scalars(tag, start=start, end=end, max_points=max_points)
    columns = {"steps": series.steps, "values": series.values, "epochs": series.epochs, "wall_times": series.wall_times}
    encoded: dict[str, Any]
    if encoding == "base64":
        encoded = {name: packed(column) for name, column in columns.items()}
    else:
        encoded = {name: floats(c) if c.dtype.kind == "f" else c.tolist() for name, c in columns.items()}
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
    """One scalar tag of many runs: ``{"tag", "series": [the answer of :func:`scalars` for each run],
    "unreadable": [{"run", "error"}]}``.

    ``runs`` in the order given; ``None`` means every readable run that has ``tag`` as a scalar tag, by name.
    The first run that is unknown or lacks the tag raises :class:`NotFound` naming it; a run whose series cannot
    be read (a damaged file) is left out of ``series`` and listed in ``unreadable`` with why, so one damaged run
    never blanks the others' charts.
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
    cache: EncodedCache | None = None,
) -> bytes:
    """:func:`scalars_batch` as compact JSON bytes, which is what the server sends.

    Each run's part is the same bytes ``/api/scalars`` would send. With a ``cache`` (the app's, see
    :func:`encoded_cache`), the part of a run that no writer holds is kept there, keyed by the run's change token (a
    directory's file sizes and modification times; a database run's count of committed batches), so asking again
    (a reload, a second viewer, zooming back out) costs a ``stat`` per run (one query for every run in a database)
    instead of a read, a downsampling and an encoding.
    """
    check_scalar_options(max_points, encoding)
    served = source_of(root)
    # Stamped before reading, all at once: a write that lands during or after a read changes its run's stamp, so
    # a stale answer is never found again (every run: the listing's tokens, taken before it).
    if runs is None:
        listing = served.listing()
        runs = [run.name for run in listing.runs if run.tags.get(tag) == SCALAR]
        stamps = [listing.stamps.get(run) if cache is not None else None for run in runs]
    else:
        stamps = served.stamps(runs) if cache is not None else [None] * len(runs)
    parts, unreadable = [], []
    for run, stamp in zip(runs, stamps):
        try:
            parts.append(_scalars_encoded(served, run, tag, start, end, max_points, encoding, stamp, cache))
        except Unreadable as e:
            unreadable.append({"run": run, "error": served.private(str(e))})
    pieces = [b'{"tag":', dumps(tag), b',"series":[']
    for k, part in enumerate(parts):  # one copy of megabytes of series, not one per concatenation
        pieces += (b",", part) if k else (part,)
    return b"".join((*pieces, b'],"unreadable":', dumps(unreadable), b"}"))


def _scalars_encoded(
    served: Source,
    run: str,
    tag: str,
    start: int | None,
    end: int | None,
    max_points: int,
    encoding: str,
    stamp: tuple[Any, ...] | None,
    cache: EncodedCache | None,
) -> bytes:
    """The bytes ``/api/scalars`` sends for one run, from ``cache`` when the run cannot have changed (its
    ``stamp``, taken before reading, is ``None`` while it is written)."""
    key = (served.shown, run, tag, start, end, max_points, encoding, stamp)

    def encode() -> bytes:
        return dumps(scalars(served, run, tag, start, end, max_points, encoding))

    if cache is None:
        return encode()
    if stamp is None:  # being written: read for this call, or with the calls that asked at the same time
        live: bytes = cache.live.get(key, encode)
        return live
    found = cache.get(key)
    if found is None:
        found = encode()
        cache.put(key, found)
    return found


def check_scalar_options(max_points: int, encoding: str) -> None:
    """A :class:`~deepscope.errors.BadInputError` for a ``max_points`` or ``encoding`` the API does not take."""
    if max_points < 4:
        raise BadInputError(f"max_points must be at least 4, not {max_points}")
    if encoding not in ENCODINGS:
        raise BadInputError(f"encoding={encoding!r}: pass one of {', '.join(map(repr, ENCODINGS))}")


def custom_scalars(root: Served, layout: object = None) -> dict[str, Any]:
    """The charts of a custom-scalars layout (TensorBoard's), with the scalar tags each one draws in every run:
    ``{"layout", "categories": [{"category", "charts": [{"title", "type": "multiline" | "margin", "tags",
    "runs": {run: [tag, ...]}, "error"?}]}]}``.

    ``layout`` is the layout to draw (``{category: {chart title: ["Multiline", [tag regex, ...]] or ["Margin",
    [value, lower, upper]]}}``, as ``Run.add_custom_scalars`` takes it: what the page edited); ``None`` means the
    runs' own layouts (``Run.add_custom_scalars``, ``SummaryWriter.add_custom_scalars``), merged: categories and
    charts in the order of the layouts (runs by name, each run's last layout), a chart that two runs' layouts name
    alike is the first one's. ``"layout"`` in the answer is the layout drawn, in that same form (what the page edits
    and downloads).

    A multiline chart draws, for every run with scalars, each tag one of its regexes finds (``re.search``, as
    TensorBoard); a margin chart its value, lower and upper tags, in order, for the runs that have all three. A
    chart whose regex does not compile draws nothing and says why in ``"error"``; the other charts are drawn.

    Raises:
        BadInputError: ``layout`` is not of that shape.
    """
    served = source_of(root)
    listed = served.runs()
    scalar_tags = {
        run.name: sorted(tag for tag, kind in run.tags.items() if kind == SCALAR)
        for run in listed
        if SCALAR in run.tags.values()
    }
    merged = _stored_layout(root, listed) if layout is None else scalar_layout("layout", layout, patterns=False)
    categories = []
    for category, titled in merged.items():
        drawn = []
        for title, (kind, tags) in titled.items():
            chart: dict[str, Any] = {"title": title, "type": kind.lower(), "tags": tags, "runs": {}}
            why = pattern_error(tags) if kind == "Multiline" else None
            if why is not None:
                chart["error"] = why
            else:
                patterns = [re.compile(pattern) for pattern in tags]
                for name, held in scalar_tags.items():
                    if kind == "Margin":
                        found = tags if all(tag in held for tag in tags) else []
                    else:
                        found = [tag for tag in held if any(p.search(tag) for p in patterns)]
                    if found:
                        chart["runs"][name] = found
            drawn.append(chart)
        categories.append({"category": category, "charts": drawn})
    return {"layout": merged, "categories": categories}


def layout_of(text: str | None) -> object:
    """The layout a page sends (``/api/custom_scalars?layout=``, JSON text), ``None`` for none: the runs' own."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise BadInputError(f"layout is not JSON ({e}): send the layout dict as JSON text") from e


def _stored_layout(root: Served, listed: Sequence[RunSummary]) -> dict[str, dict[str, list[Any]]]:
    """The runs' last custom-scalars layouts merged (see :func:`custom_scalars`); a run or record that cannot be
    read is left out (the run list names it)."""
    merged: dict[str, dict[str, list[Any]]] = {}
    for run in listed:
        if LAYOUT not in run.tags.values():
            continue
        try:
            with open_reader(root, run.name) as reader:
                layouts = [t for t, k in reader.tags().items() if k == LAYOUT]
                # A damaged record is passed over (the last readable layout is the one drawn).
                stored = [records[-1] for t in layouts if (records := reader.records(t, unreadable=[]))]
        except NotFound:
            continue
        for record in stored:
            try:
                checked = scalar_layout(record.tag, record.layout, patterns=False)  # type: ignore[union-attr]
            except BadInputError:
                continue  # not a layout (written by hand): the others are drawn
            for category, titled in checked.items():
                for title, chart in titled.items():
                    merged.setdefault(category, {}).setdefault(title, chart)
    return merged
