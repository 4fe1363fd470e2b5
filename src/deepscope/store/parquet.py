"""Big arrays beside a run as Parquet (pyarrow): one row per item, an array per row as a fixed-size list column with
its shape in the file's metadata, so any data tool reads the file and deepscope gets its arrays back.

pyarrow is the ``parquet`` extra (it comes with ``ray[data]`` too) and is imported here only when a Parquet file is
written or read: the store, the board and ``import deepscope`` never load it otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError

if TYPE_CHECKING:
    import pyarrow as pa

# The key of deepscope's description in a Parquet file's metadata (JSON): each array column's item shape, and what
# the file holds.
META = b"deepscope"
INSTALL = "pip install 'deepscope[parquet]' (pyarrow)"


def pyarrow() -> Any:
    """The ``pyarrow`` module, or an ImportError that says which extra installs it."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # registers pa.parquet
    except ImportError as e:
        raise ImportError(f"Parquet files need pyarrow: {INSTALL}") from e
    return pa


def array_column(values: np.ndarray) -> pa.Array:
    """``[N, *shape]`` values as a fixed-size list column of ``prod(shape)`` values per row (the dtype kept)."""
    pa = pyarrow()
    values = np.ascontiguousarray(values)
    size = int(np.prod(values.shape[1:], dtype=np.int64))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)


def column_array(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]) -> np.ndarray:
    """A fixed-size list column back as ``[N, *shape]`` NumPy values, writable (a copy: Arrow's own buffers are
    read-only, which torch.from_numpy warns about)."""
    pa = pyarrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    flat = column.flatten().to_numpy(zero_copy_only=False, writable=True)
    return flat.reshape(len(column), *shape)


def schema(columns: Mapping[str, pa.DataType], shapes: Mapping[str, Sequence[int]], **about: Any) -> pa.Schema:
    """A schema of ``columns`` whose metadata records each array column's item shape (``shapes``) and ``about``."""
    pa = pyarrow()
    described = {"shapes": {name: [int(s) for s in shape] for name, shape in shapes.items()}, **about}
    return pa.schema(list(columns.items()), metadata={META: json.dumps(described).encode()})


def described(metadata: Mapping[bytes, bytes] | None, where: str) -> dict[str, Any]:
    """deepscope's description in a Parquet schema's metadata, or a BadInputError naming the file."""
    if not metadata or META not in metadata:
        raise BadInputError(f"{where} was not written by deepscope (no {META.decode()!r} metadata)")
    return json.loads(metadata[META])  # type: ignore[no-any-return]
