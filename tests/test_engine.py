"""deepscope.engine's merging and the Ray engine's block sizes, without starting Ray."""

from __future__ import annotations

import numpy as np
import pytest

import deepscope as ds
from deepscope.engine import Merging, concat
from deepscope.features.patches import in_top, merge_top, top_order
from deepscope.ray_engine import BLOCK_BATCHES, run_lengths


def _rows(start: int, count: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + count)
    return {"id": ids, "value": ids[:, None] * np.array([[1.0, -1.0]])}


def test_concat_is_merged_once_and_equals_the_running_concatenation() -> None:
    parts = [_rows(start, 5) for start in range(0, 50, 5)]
    merging, running = Merging(concat), None
    for rows in parts:
        merging.add(rows)
        running = concat(running, rows)
    assert len(merging.parts) == len(parts)  # kept, not copied again at each batch
    merged = merging.result()
    assert merged is not None and running is not None
    assert merged.keys() == running.keys()
    assert all(np.array_equal(merged[key], running[key]) for key in merged)
    assert Merging(concat).result() is None
    with pytest.raises(ds.BadInputError, match="labels"):
        merging.add({"id": np.arange(2)})  # a batch without a column the others have


def test_the_kth_value_and_top_rows_match_a_full_sort_with_ties() -> None:
    generator = np.random.default_rng(0)
    values = generator.integers(0, 4, size=(40, 3)).astype(np.float32)  # many ties
    ids = generator.permutation(40)
    keep = in_top(values, ids, 5)
    order = top_order({"value": values, "id": ids}, 5)  # [5, U]: by value, then the smaller id
    assert set(np.flatnonzero(keep)) == set(order.flatten().tolist())
    first = merge_top(None, {"value": values[:17], "id": ids[:17]}, 5)
    split = merge_top(first, {"value": values[17:], "id": ids[17:]}, 5)
    assert np.array_equal(np.sort(split["id"]), np.sort(ids[keep]))


@pytest.mark.parametrize(("batches", "actors"), [(1, 2), (7, 2), (196, 2), (1000, 8)])
def test_in_memory_blocks_cover_every_batch_and_end_short(batches: int, actors: int) -> None:
    lengths = run_lengths(batches, actors)
    sizes, left = [], batches
    while left > 0:
        sizes.append(min(left, next(lengths)))
        left -= sizes[-1]
    assert sum(sizes) == batches and max(sizes) <= BLOCK_BATCHES
    assert sizes == sorted(sizes, reverse=True)  # the largest blocks first
    assert sizes[-actors:] == [1] * min(actors, len(sizes))  # the last ones one batch: no actor waits long
    if batches >= 196:
        assert len(sizes) <= batches / 4  # far fewer blocks than batches
    unknown = run_lengths(None, actors)
    assert [next(unknown) for _ in range(3)] == [4, 4, 4]
