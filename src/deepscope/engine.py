"""One pass of a model over a data set, as map + merge: run in this process, or on Ray.

Every data-set call (``embed``, ``top_patches``, ``dead_units``, ``evaluate_model``, ``confidently_wrong``) is a
:class:`Job` of two functions, and :func:`run` runs it on whichever engine the data asks for:

* ``job.map(model, batch) -> Rows``: one :class:`Batch`'s partial result as plain numpy columns that share their
  first axis (one row per kept item, or one row per batch for a reduction such as a running maximum). It runs
  where the model is: this process, or a Ray actor that holds its own copy of the model.
* ``job.merge(rows_so_far or None, rows) -> Rows``: folds more rows in. It must be exact and must not depend on
  the order rows arrive in, nor on how they were cut into batches: any row that depends on its position carries
  its ``id`` (the item's position in the data set) and ties are broken by it. The driver merges the rows as they
  come; the caller turns the final rows into its answer object. :func:`concat`, the merge of row-wise jobs, is
  folded in linear time (:class:`Merging` keeps the parts and joins them once, at the end).
* ``job.combine``: a merge without side effects (often the same function) that a Ray actor may run over the
  batches of one block before sending their rows, so that a block sends one set of rows (top patches: only each
  unit's top ``k`` of the block); ``None`` (a merge that writes files) sends each batch's rows as they are.

The same job on both engines gives the same answer, by construction: in this process :func:`run` cuts the data
into batches (:mod:`deepscope.batches`), numbers the items ``0..N-1`` in the order read, and merges each batch's
rows; on Ray (:mod:`deepscope.ray_engine`) the blocks of the data set go to a warm pool of actors that hold the model,
and the ids come from the data set's ``id`` column (its rows counted in block order when it has none).

Data for the Ray engine: a ``ray.data.Dataset`` whose rows hold the input in column ``image`` (or
``input_column``), optionally ``label`` (``label_column``) and ``id``; or, with ``engine="ray"``, any form
:mod:`deepscope.batches` accepts (sent to the object store first).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batches import batches as as_batches
from .errors import BadInputError

Rows = dict[str, np.ndarray]
"""A partial result: named numpy columns sharing their first axis."""

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class Batch:
    """One batch of a data set: ``inputs [B, ...]``, ``labels [B]`` (long) or ``None``, ``ids [B]`` (long): each
    item's position in the data set (or the data set's own ``id`` column on Ray)."""

    inputs: Tensor
    labels: Tensor | None
    ids: Tensor


@dataclass(frozen=True)
class Job:
    """A data-set pass as map + merge (see the module's docstring). Both functions must pickle (module-level
    functions, or ``functools.partial`` of them) so that Ray can send them to its actors.

    Attributes:
        map: ``(model, batch) -> Rows`` on the model's device, under ``torch.no_grad``.
        merge: ``(rows so far or None, rows) -> Rows``, exact and independent of arrival order.
        desc: the progress bar's text.
        batch_size: items per ``map`` call.
        labels: whether the data must give labels (a clear error when it does not).
        combine: a merge without side effects that Ray's actors run over a block's batches (``None``: each
            batch's rows are sent as they are).
    """

    map: Callable[[nn.Module, Batch], Rows]
    merge: Callable[[Rows | None, Rows], Rows]
    desc: str
    batch_size: int = 256
    labels: bool = False
    combine: Callable[[Rows | None, Rows], Rows] | None = None


@dataclass(frozen=True)
class RayOptions:
    """How a job runs on Ray (see :func:`deepscope.ray_engine.run`).

    Attributes:
        input_column, label_column, id_column: the data set's columns for inputs, labels and item ids.
        actors: the actor pool's size; default: one per GPU on a cluster with GPUs, else 2.
        cpus_per_actor: CPUs (and torch threads) per actor.
        prefetch: blocks sent to each actor ahead of the one it maps (at least 1).

    The pool stays warm for the next call with the same model, ``actors`` and ``cpus_per_actor``;
    :func:`close_pools` ends it.
    """

    input_column: str = "image"
    label_column: str = "label"
    id_column: str = "id"
    actors: int | None = None
    cpus_per_actor: float = 1.0
    prefetch: int = 2


def is_ray_dataset(data: object) -> bool:
    """Whether ``data`` is a ``ray.data.Dataset`` (without importing Ray: a program that has none loaded has none)."""
    module = sys.modules.get("ray.data")
    return module is not None and isinstance(data, module.Dataset)


def run(
    job: Job,
    model: nn.Module | Callable[[], nn.Module],
    data: object,
    engine: Engine | None = None,
    progress: bool | None = None,
    max_items: int | None = None,
    ray: RayOptions | None = None,
) -> Rows:
    """``job`` over ``data``: the merged rows of every batch.

    Args:
        job: the map and merge.
        model: the network (run as given, on its own device, in this process); on Ray also a factory: a callable
            without arguments that builds the model on each actor (for a model that does not pickle, or is big).
        data: any form :mod:`deepscope.batches` accepts, or a ``ray.data.Dataset``.
        engine: ``None`` (Ray for a Ray data set, else this process), ``"local"`` or ``"ray"``.
        progress: show a progress bar; ``None`` shows it on a terminal only.
        max_items: stop after this many items (this process only).
        ray: the Ray engine's options.
    """
    if engine is not None and engine not in ENGINES:
        raise BadInputError(f"engine={engine!r}; pass 'local', 'ray' or None (Ray for a ray.data.Dataset).")
    if on_ray(engine, data):
        if max_items is not None:
            raise BadInputError("max_items works in this process only; on Ray pass dataset.limit(n) instead.")
        from . import ray_engine

        return ray_engine.run(job, model, data, progress=progress, options=ray or RayOptions())
    if is_ray_dataset(data):
        raise BadInputError("a ray.data.Dataset runs on Ray; pass engine='ray' or None, not 'local'.")
    if not isinstance(model, nn.Module):
        raise BadInputError(
            f"model must be a torch.nn.Module, not {type(model).__name__} (a factory callable works on Ray only)."
        )
    return run_local(job, model, data, progress, max_items)


def run_local(
    job: Job, model: nn.Module, data: object, progress: bool | None = None, max_items: int | None = None
) -> Rows:
    """``job`` over ``data`` in this process: the batches in order, items numbered ``0..N-1`` as read."""
    split = as_batches(data, job.batch_size)
    disable = None if progress is None else not progress
    merging = Merging(job.merge)
    seen = 0
    with torch.no_grad():
        for inputs, labels in tqdm(split, total=split.count, desc=job.desc, unit="batch", disable=disable, leave=False):
            if max_items is not None:
                inputs = inputs[: max_items - seen]
                labels = None if labels is None else labels[: max_items - seen]
            check_labels(job, inputs, labels)
            ids = torch.arange(seen, seen + len(inputs))
            merging.add(job.map(model, Batch(inputs, labels, ids)))
            seen += len(inputs)
            if max_items is not None and seen >= max_items:
                break
    merged = merging.result()
    if merged is None or seen == 0:
        raise BadInputError("the data yielded no inputs; pass a non-empty tensor, DataLoader or data set.")
    return merged


def on_ray(engine: Engine | None, data: object) -> bool:
    """Whether :func:`run` runs on Ray for this ``engine`` and ``data``."""
    return engine == "ray" or (engine is None and is_ray_dataset(data))


def fetch(data: object, ids: Collection[int], batch_size: int, ray: RayOptions | None = None) -> dict[int, Tensor]:
    """The inputs of the items ``ids`` of ``data`` (numbered as :func:`run` numbers them), read again: a Ray data
    set's from the blocks that hold them, other data by a pass that stops after the last one. Items that cannot be
    read again (a generator is spent) are missing from the answer."""
    if is_ray_dataset(data):
        from . import ray_engine

        return ray_engine.fetch(data, np.asarray(sorted(ids), dtype=np.int64), ray or RayOptions(), batch_size)
    wanted, found, seen = set(ids), {}, 0
    last = max(wanted, default=-1)
    for inputs, _ in as_batches(data, batch_size):
        for i in wanted.intersection(range(seen, seen + len(inputs))):
            found[i] = inputs[i - seen].detach().cpu()
        seen += len(inputs)
        if seen > last:
            break
    return found


def close_pools() -> None:
    """End the warm Ray actor pool the data-set calls keep between calls (see :mod:`deepscope.ray_engine`), if
    any. It also ends with ``ray.shutdown()`` and at the interpreter's exit."""
    module = sys.modules.get("deepscope.ray_engine")
    if module is not None:
        module.close()


def check_labels(job: Job, inputs: Tensor, labels: Tensor | None) -> None:
    """A clear error for a batch without the labels the job needs, or with a label count that does not match."""
    if labels is None:
        if job.labels:
            raise BadInputError(
                "the data must give labels: (inputs, labels) tensors, (inputs, labels) batches, or a Ray data set "
                "with a 'label' column (label_column=...)."
            )
        return
    if len(labels) != len(inputs):
        raise BadInputError(f"a batch has {len(inputs)} inputs but {len(labels)} labels; give one label per input.")


def concat(merged: Rows | None, rows: Rows) -> Rows:
    """The merge of row-wise jobs: the rows appended (put in id order by :func:`in_id_order` at the end)."""
    if merged is None:
        return dict(rows)
    return concat_all([merged, rows])


def concat_all(parts: list[Rows]) -> Rows:
    """Several sets of rows appended, each column copied once."""
    first = parts[0]
    for rows in parts[1:]:
        if rows.keys() != first.keys():
            raise BadInputError(
                f"some batches give columns {sorted(first)}, others {sorted(rows)}: every batch must have labels, "
                "or none."
            )
    if len(parts) == 1:
        return dict(first)
    return {key: np.concatenate([rows[key] for rows in parts]) for key in first}


class Merging:
    """Rows folded in as they come with a job's merge; :func:`concat`'s parts are kept and joined once by
    :meth:`result` (folding each batch into the rows so far would copy them again each time: quadratic)."""

    def __init__(self, merge: Callable[[Rows | None, Rows], Rows]) -> None:
        self.merge = merge
        self.merged: Rows | None = None
        self.parts: list[Rows] = []

    def add(self, rows: Rows) -> None:
        if self.merge is not concat:
            self.merged = self.merge(self.merged, rows)
        elif self.parts and rows.keys() != self.parts[0].keys():
            concat_all([self.parts[0], rows])  # the clear error
        else:
            self.parts.append(rows)

    def result(self) -> Rows | None:
        """The rows merged so far (``None`` before any)."""
        if self.parts:
            self.merged = concat_all(self.parts)
            self.parts = [self.merged]
        return self.merged


def in_id_order(rows: Rows) -> Rows:
    """Rows sorted by their ``id`` column: the data set's order, whichever order the batches finished in."""
    order = np.argsort(rows["id"], kind="stable")
    return {key: value[order] for key, value in rows.items()}
