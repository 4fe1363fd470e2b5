"""Embeddings: feature vectors at a step for the board's projector; arrays in a ``.npz`` file beside the run,
labels in the database; or, for millions of items, everything in a Parquet file beside the run (labels included:
a million labels as JSON in the database cost a second to parse, and a hover reads one row group of thumbnails)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .. import parquet
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, pixels, register, unreadable

KIND = "embedding"
# From this many items on, an embedding goes to Parquet (when pyarrow is installed and ``parquet`` is not False).
PARQUET_ROWS = 1_000_000
# Rows per Parquet row group: what a hover reads to show one thumbnail.
ROW_GROUP = 16_384


@dataclass(frozen=True)
class Embedding:
    """Feature vectors at a step, for a projection view: ``features`` float ``[N, D]``, one label row per vector.

    ``labels`` is ``None``, ``N`` strings, or ``N`` rows of strings with ``label_header`` naming the columns;
    ``thumbnails`` (optional) uint8 ``[N, H, W]`` or ``[N, H, W, 3]`` (or floats in [0, 1]), one image per vector.
    ``projections`` (optional) names precomputed 2D or 3D points ``[N, 2 | 3]`` (``{"tsne-2d": points}``), which
    the board's projector shows as they are instead of computing them.
    The store keeps the arrays in a ``.npz`` file beside the run's database and the labels in the database; with
    ``parquet=True`` (default ``None``: from :data:`PARQUET_ROWS` items on, when pyarrow is installed), it keeps
    everything in a Parquet file beside the run instead (:func:`parquet_table`).
    """

    tag: str
    step: int
    features: np.ndarray
    labels: list[str] | list[list[str]] | None = None
    label_header: list[str] | None = None
    thumbnails: np.ndarray | None = None
    wall_time: float | None = None
    projections: dict[str, np.ndarray] | None = None
    parquet: bool | None = None


@register
class EmbeddingCodec(Codec):
    kind = KIND
    record = Embedding
    has_files = True
    view = "projector"

    def normalise(self, record: Embedding) -> dict[str, Any]:
        tag = record.tag
        features = array(record.features)
        if features.ndim != 2 or features.dtype.kind not in "iuf" or features.shape[0] == 0:
            raise BadInputError(
                f"{tag!r}: embedding features are a numeric [N, D] array with N >= 1, not {features.shape}"
            )
        n = features.shape[0]
        changes: dict[str, Any] = {"features": np.ascontiguousarray(features, dtype=np.float32)}
        if record.labels is not None:
            labels: list[Any] = [
                [str(v) for v in row] if isinstance(row, list | tuple) else str(row) for row in record.labels
            ]
            if len(labels) != n:
                raise BadInputError(f"{tag!r}: {len(labels)} labels for {n} feature vectors; give one per vector")
            rows = {len(row) if isinstance(row, list) else None for row in labels}
            header = record.label_header
            if rows != {None} and (len(rows) != 1 or header is None or len(header) != next(iter(rows))):
                raise BadInputError(
                    f"{tag!r}: labels with several columns need rows of equal length and a label_header naming each"
                )
            changes["labels"] = labels
        if record.thumbnails is not None:
            thumbnails = array(record.thumbnails)
            if thumbnails.ndim not in (3, 4) or len(thumbnails) != n:
                raise BadInputError(
                    f"{tag!r}: thumbnails are [N, H, W] or [N, H, W, C] with N = {n}, not {list(thumbnails.shape)}"
                )
            changes["thumbnails"] = np.stack([pixels(tag, image) for image in thumbnails])
        if record.projections is not None:
            changes["projections"] = _projections(tag, record.projections, n)
        changes["parquet"] = _as_parquet(record.parquet, n)
        return changes

    def encode(self, record: Embedding, files: FileSink) -> Stored:
        if record.parquet:
            return self._encode_parquet(record, files)
        arrays = {"features": record.features}
        if record.thumbnails is not None:
            arrays["thumbnails"] = record.thumbnails
        # Projections under numbered keys (any name stays out of the zip's member names); the names in the db.
        projections = record.projections or {}
        keys = {name: f"projection_{i}" for i, name in enumerate(projections)}
        arrays.update({keys[name]: points for name, points in projections.items()})
        out = io.BytesIO()
        np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
        file = files.put(".npz", out.getvalue())
        described: dict[str, Any] = {
            "labels": record.labels,
            "label_header": record.label_header,
            "shape": list(record.features.shape),
            "projections": {name: [keys[name], *points.shape] for name, points in projections.items()},
        }
        return Stored(int(record.step), record.wall_time, described, file)

    def _encode_parquet(self, record: Embedding, files: FileSink) -> Stored:
        """Everything in one Parquet file; the database holds the shape, label header and projections' names."""
        out = io.BytesIO()
        parquet.pyarrow().parquet.write_table(parquet_table(record), out, row_group_size=ROW_GROUP)
        file = files.put(".parquet", out.getvalue())
        projections = record.projections or {}
        described: dict[str, Any] = {
            "format": "parquet",
            "labels": None,  # in the file: column "label:<name>" for each of "columns"
            "label_header": record.label_header,
            "columns": _header(record),
            "rows": bool(record.labels) and isinstance(record.labels[0], list),  # type: ignore[index]
            "shape": list(record.features.shape),
            "projections": {name: [f"projection_{i}", *p.shape] for i, (name, p) in enumerate(projections.items())},
        }
        return Stored(int(record.step), record.wall_time, described, file)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Embedding:
        assert stored.file is not None
        data = stored.data
        if data.get("format") == "parquet":
            return self._decode_parquet(tag, stored, files)
        try:
            with np.load(io.BytesIO(files.read(stored.file))) as arrays:
                features = arrays["features"]
                thumbnails = arrays["thumbnails"] if "thumbnails" in arrays.files else None
                # Runs written before projections were stored have none.
                kept = data.get("projections") or {}
                projections = {name: arrays[key] for name, (key, *_) in kept.items()} or None
        except (OSError, ValueError, KeyError) as e:
            raise unreadable(files, stored.file, "an embedding", tag, stored.step, e) from e
        return Embedding(
            tag,
            stored.step,
            features,
            labels=data["labels"],
            label_header=data["label_header"],
            thumbnails=thumbnails,
            wall_time=stored.wall_time,
            projections=projections,
        )

    def _decode_parquet(self, tag: str, stored: Stored, files: FileSource) -> Embedding:
        assert stored.file is not None
        data = stored.data
        pa = parquet.pyarrow()
        try:
            table = pa.parquet.read_table(pa.BufferReader(files.read(stored.file)))
        except (OSError, pa.ArrowException) as e:
            raise unreadable(files, stored.file, "an embedding", tag, stored.step, e) from e
        shapes = parquet.described(table.schema.metadata, files.where(stored.file))["shapes"]

        def column(name: str) -> np.ndarray:
            return parquet.column_array(table.column(name), shapes[name])

        labels: list[Any] | None = None
        if data["columns"]:
            columns = [table.column(f"label:{name}").to_pylist() for name in data["columns"]]
            labels = [list(row) for row in zip(*columns)] if data["rows"] else columns[0]
        kept = data.get("projections") or {}
        return Embedding(
            tag,
            stored.step,
            column("features"),
            labels=labels,
            label_header=data["label_header"],
            thumbnails=column("thumbnails") if "thumbnails" in table.column_names else None,
            wall_time=stored.wall_time,
            projections={name: column(key) for name, (key, *_) in kept.items()} or None,
            parquet=True,
        )


def parquet_table(record: Embedding) -> Any:
    """An embedding as a pyarrow Table, one row per item: ``item`` (its index), a string column ``label:<name>``
    per label column (``label:label`` for plain labels), ``features`` (float32 ``[D]`` per row), ``thumbnails``
    (uint8) and ``projection_<i>`` (float32 ``[2 | 3]``), each array column's item shape in the metadata."""
    pa = parquet.pyarrow()
    n = len(record.features)
    columns: dict[str, Any] = {"item": pa.array(np.arange(n, dtype=np.int64))}
    header = _header(record)
    if header:
        rows = [row if isinstance(row, list) else [row] for row in record.labels or []]
        for j, name in enumerate(header):
            columns[f"label:{name}"] = pa.array([row[j] for row in rows], pa.string())
    arrays = {"features": record.features}
    if record.thumbnails is not None:
        arrays["thumbnails"] = record.thumbnails
    for i, points in enumerate((record.projections or {}).values()):
        arrays[f"projection_{i}"] = points
    columns |= {name: parquet.array_column(values) for name, values in arrays.items()}
    types = {name: column.type for name, column in columns.items()}
    shapes = {name: values.shape[1:] for name, values in arrays.items()}
    schema = parquet.schema(types, shapes, format="deepscope.embedding/1")
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def _header(record: Embedding) -> list[str]:
    """The names of the label columns (``["label"]`` for plain labels, none without labels)."""
    if record.labels is None:
        return []
    return list(record.label_header) if record.label_header else ["label"]


def _as_parquet(parquet_wanted: bool | None, n: int) -> bool:
    """Whether an embedding of ``n`` items goes to Parquet: as asked, else from :data:`PARQUET_ROWS` items on
    when pyarrow is installed (without it, such an embedding is kept as ``.npz``, as it always was)."""
    if parquet_wanted is not None:
        if parquet_wanted:
            parquet.pyarrow()  # an ImportError naming the extra, at log time
        return bool(parquet_wanted)
    if n < PARQUET_ROWS:
        return False
    try:
        parquet.pyarrow()
    except ImportError:
        return False
    return True


def _projections(tag: str, projections: object, n: int) -> dict[str, np.ndarray]:
    """Each named projection as float32 ``[N, 2 | 3]`` finite points, or a :class:`BadInputError`."""
    if not isinstance(projections, Mapping):
        raise BadInputError(f"{tag!r}: projections are a dict of name -> [N, 2 | 3] points, not {type(projections)}")
    checked = {}
    for name, points in projections.items():
        if not isinstance(name, str) or not name:
            raise BadInputError(f"{tag!r}: a projection's name is a non-empty str, not {name!r}")
        found = array(getattr(points, "points", points))  # a deepscope Projection, or its points
        if found.ndim != 2 or found.shape[0] != n or found.shape[1] not in (2, 3) or found.dtype.kind not in "iuf":
            raise BadInputError(f"{tag!r}: projection {name!r} must be numeric [{n}, 2 | 3] points, not {found.shape}")
        if not np.isfinite(found).all():
            raise BadInputError(f"{tag!r}: projection {name!r} holds NaN or infinite points")
        checked[name] = np.ascontiguousarray(found, dtype=np.float32)
    return checked


@loggable(("deepscope.embed.extract", "Features"), description="ds.embed's Features")
def _features(value: Any, tag: str, step: int) -> list[Any]:
    return [value.to_record(tag, step)]
