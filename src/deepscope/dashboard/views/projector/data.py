"""What the Projector view answers: a run's embeddings, their labels, projections (stored, or computed here: PCA at
once, t-SNE and UMAP in background threads), nearest neighbours in the original space, and thumbnails.

The view's per-app state (:class:`Projector`: located records, arrays read, projection jobs) hangs off the app
(``app.state.views["projector"]``); a function called without one gets a fresh one, so nothing is kept between
calls (and a t-SNE started that way is not found again by :func:`projection_status`).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ....errors import BadInputError
from ....store import parquet
from ....store.records.embedding import KIND as EMBEDDING
from ...common import NotFound, Recent, Served, at_step, check_kind, floats, open_reader, packed32, source_of, stamp_of
from ...sources import Source

# The projections the board computes when none is stored under the name: "<method>-<dim>d".
COMPUTED = tuple(f"{method}-{dim}d" for method in ("pca", "tsne", "umap") for dim in (2, 3))
# t-SNE and UMAP of a bigger embedding are computed on this many points drawn at random (seed 0), as TensorBoard's
# projector samples 10,000 for t-SNE: minutes on two cores already; PCA projects every point.
NONLINEAR_SAMPLE = 20_000
DEFAULT_NEIGHBORS = 10


def embeddings(root: Served, run: str, state: Projector | None = None) -> dict[str, Any]:
    """The embeddings of a run: ``{"run", "embeddings": [{"tag", "steps", "step", "n", "d", "columns",
    "thumbnails", "stored", "projections"}]}``, one per tag, describing its last step.

    ``columns``: the names of its label columns (``label``, ``prediction``, ...; ``correct`` is added by
    :func:`embedding_labels` when both of the first two exist); ``thumbnails``: whether it has images to hover;
    ``stored``: the names of its precomputed projections; ``projections``: those, then the computable
    ``pca-2d`` ... ``umap-3d`` not stored under the same name, in the order the page offers them.
    """
    state = state or Projector()
    served = source_of(root)
    stamp = stamp_of(served, run)
    key = (served.shown, run, "embeddings", stamp)
    found = state.items.get(key) if stamp is not None else None
    if found is not None:
        return {"run": run, "embeddings": found}
    with open_reader(served, run) as reader:
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
        state.items.put(key, found)
    return {"run": run, "embeddings": found}


def embedding_labels(
    root: Served, run: str, tag: str, step: int | None = None, state: Projector | None = None
) -> dict[str, Any]:
    """The label columns of an embedding, compactly: ``{"run", "tag", "step", "n", "columns": [{"name",
    "values": the distinct strings, sorted, "codes": {"dtype": "<u1" | "<u2" | "<i4", "base64"}: each point's
    index into values, in the smallest type that holds them}]}``. With both a ``label`` and a ``prediction``
    column, a ``correct`` column (``"wrong"`` / ``"right"``) follows them.
    """
    state = state or Projector()
    item = _embedding_item(root, run, tag, step, state)
    columns = state.arrays.get(item.key, "labels", lambda: _label_columns(item))
    return {
        "run": run,
        "tag": tag,
        "step": item.step,
        "n": item.n,
        "columns": [{"name": name, "values": v, "codes": _codes(codes, len(v))} for name, v, codes in columns],
    }


def projection(
    root: Served, run: str, tag: str, name: str, step: int | None = None, state: Projector | None = None
) -> dict[str, Any]:
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
    state = state or Projector()
    item = _embedding_item(root, run, tag, step, state)
    stored = item.meta.get("projections") or {}
    if name in stored:
        points = state.arrays.get(item.key, f"projection:{name}", lambda: _load(item, stored[name][0]))
        return _job_answer(run, tag, item, name, True, int(stored[name][-1]), _Job("done", points), True)
    method, dim = _computable(run, tag, name, stored)
    return _job_answer(run, tag, item, name, False, dim, state.jobs.start(item, name, method, dim), True)


def projection_status(
    root: Served, run: str, tag: str, name: str, step: int | None = None, state: Projector | None = None
) -> dict[str, Any]:
    """:func:`projection`'s answer without the points, and without starting anything: ``status`` is
    ``"absent"`` for a computable projection nobody asked for yet."""
    state = state or Projector()
    item = _embedding_item(root, run, tag, step, state)
    stored = item.meta.get("projections") or {}
    if name in stored:
        return _job_answer(run, tag, item, name, True, int(stored[name][-1]), _Job("done"), False)
    _, dim = _computable(run, tag, name, stored)
    return _job_answer(run, tag, item, name, False, dim, state.jobs.get(item, name) or _Job("absent"), False)


def neighbors(
    root: Served,
    run: str,
    tag: str,
    index: int,
    k: int = DEFAULT_NEIGHBORS,
    metric: str = "cosine",
    step: int | None = None,
    state: Projector | None = None,
) -> dict[str, Any]:
    """The ``k`` nearest points to point ``index`` in the embedding's original feature space (not in a
    projection), nearest first: ``{"run", "tag", "step", "index", "metric", "indices", "distances"}``, by
    :func:`deepscope.embed.neighbors` (brute force; ``metric`` ``"cosine"`` or ``"euclidean"``)."""
    state = state or Projector()
    import torch

    from ....embed import neighbors as nearest

    item = _embedding_item(root, run, tag, step, state)
    if not 0 <= index < item.n:
        raise BadInputError(f"index={index}: the embedding {tag!r} has points 0 to {item.n - 1}")
    features = torch.from_numpy(state.arrays.get(item.key, "features", lambda: _load(item, "features")))
    found = nearest(features, [index], k=k, metric=metric)  # type: ignore[arg-type]
    return {
        "run": run,
        "tag": tag,
        "step": item.step,
        "index": index,
        "metric": metric,
        "indices": found.indices[0].tolist(),
        "distances": floats(found.distances[0].double().numpy()),
    }


def thumbnail(
    root: Served, run: str, tag: str, index: int, step: int | None = None, state: Projector | None = None
) -> bytes:
    """The thumbnail of point ``index`` of an embedding as PNG bytes, for the projector's hover and lists."""
    state = state or Projector()
    from PIL import Image as PILImage

    item = _embedding_item(root, run, tag, step, state)
    if "thumbnails" not in _members(item.open(), item.file):
        raise NotFound(f"the embedding {tag!r} of run {run!r} has no thumbnails")
    if not 0 <= index < item.n:
        raise NotFound(f"the embedding {tag!r} of run {run!r} has no point {index}")
    if item.parquet:  # the row group that holds the point, not a million thumbnails
        pixels = _parquet_row(item, "thumbnails", index)
    else:
        pixels = state.arrays.get(item.key, "thumbnails", lambda: _load(item, "thumbnails"))[index]
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


def _embedding_item(root: Served, run: str, tag: str, step: int | None, state: Projector) -> _Item:
    """The embedding record of ``tag`` at ``step`` (default: the last), from the state's ``items`` while the run is
    unchanged: its description holds every label, so parsing it again would cost each hover ~0.2 s at 100,000."""
    served = source_of(root)
    stamp = stamp_of(served, run)
    key = (served.shown, run, tag, step, stamp)
    found = state.items.get(key) if stamp is not None else None
    if found is not None:
        return found
    with open_reader(served, run) as reader:
        check_kind(reader, run, tag, EMBEDDING)
        records = reader.files(tag)
        chosen_step, file, meta = at_step(records, step, run, tag)
    try:
        item = _Item(served, run, file, meta, chosen_step)
    except (OSError, NotFound) as e:
        raise NotFound(f"the embedding {tag!r} of run {run!r} at step {chosen_step} is missing its file {file}") from e
    if stamp is not None:
        state.items.put(key, item)
    return item


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

    def __init__(self, max_bytes: int, arrays: _Arrays) -> None:
        self.max_bytes, self.arrays = max_bytes, arrays
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
        from ....embed import project

        job.status, job.started = "running", time.monotonic()
        features = self.arrays.get(item.key, "features", lambda: _load(item, "features"))
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
        "points": packed32(points) if with_points and points is not None else None,
        "sample": None
        if job.sample is None
        else {"size": len(job.sample), "indices": packed32(job.sample) if with_points and done else None},
    }


def _codes(codes: np.ndarray, count: int) -> dict[str, str]:
    """Codes into ``count`` values in the smallest type that holds them: a million labels of 10 classes in 1.3 MB."""
    dtype = "<u1" if count <= 2**8 else "<u2" if count <= 2**16 else "<i4"
    return {"dtype": dtype, "base64": base64.b64encode(np.ascontiguousarray(codes, dtype=dtype).tobytes()).decode()}


class Projector:
    """The Projector view's per-app state: located embedding records and listings (by run change token), the
    arrays of the last embeddings read, and the projections computed (t-SNE and UMAP jobs)."""

    def __init__(self) -> None:
        self.items = Recent(entries=16)
        self.arrays = _Arrays(entries=2)
        self.jobs = _Jobs(max_bytes=512 * 2**20, arrays=self.arrays)

    def clear(self) -> None:
        """Forget every located record and array read (computed projections stay)."""
        self.items.clear()
        self.arrays.clear()
