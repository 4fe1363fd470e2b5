"""The Ray engine of :mod:`deepscope.engine`: a job's ``map`` as Ray Data ``map_batches`` over an actor pool.

``run(job, model, data, progress, options) -> Rows``:

* the model goes to the object store once (``ray.put``) and each actor deserialises it once in its constructor;
  a factory callable (no arguments, returns the model) is called on each actor instead;
* one GPU per actor when the cluster has GPUs (the model moved to it), CPU actors otherwise, each with
  ``cpus_per_actor`` CPUs and as many torch threads;
* Ray restarts an actor that dies and redoes its unfinished batches (``max_restarts`` / ``max_task_retries``
  unlimited); a batch's rows reach the driver only once its task has finished, so nothing is counted twice;
* the driver reads the mapped rows as they are produced (prefetched), merges them with ``job.merge`` and shows a
  tqdm bar (beside Ray Data's own progress);
* items are identified by the data set's ``id`` column; a data set without one is numbered in its row order first.

Ray is imported here only; without it the calls say which extra to install.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import batches as as_batches
from .engine import Batch, Job, RayOptions, Rows, check_labels, is_ray_dataset
from .errors import BadInputError

INSTALL = "pip install 'deepscope[ray]'"


def require() -> Any:
    """The ``ray`` module with ``ray.data`` loaded, or a :class:`BadInputError` that names the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise BadInputError(f"running on Ray needs Ray Data ({error}): {INSTALL}") from None
    return ray


def run(
    job: Job,
    model: nn.Module | Callable[[], nn.Module],
    data: object,
    progress: bool | None,
    options: RayOptions,
) -> Rows:
    """``job`` over ``data`` (a Ray data set, or any :mod:`deepscope.batches` form) on Ray; the merged rows."""
    ray = require()
    if not isinstance(model, nn.Module) and not callable(model):
        raise BadInputError(f"model must be a torch.nn.Module or a factory callable, not {type(model).__name__}.")
    dataset = dataset_of(data, options, job.batch_size)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = options.actors or (gpus or 2)
    shipped = [ray.put(model)] if isinstance(model, nn.Module) else model  # in a list: Ray passes it unresolved
    mapped = dataset.map_batches(
        Worker,
        fn_constructor_args=(shipped, job, options, bool(gpus)),
        batch_size=job.batch_size,
        batch_format="numpy",
        zero_copy_batch=False,  # writable arrays, so torch.from_numpy takes them without a copy or a warning
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=options.prefetch),
        num_cpus=options.cpus_per_actor,
        num_gpus=1 if gpus else 0,
        # Ray Data's actor pools restart dead actors and retry their tasks without limit by default
        # (max_restarts=-1, max_task_retries=-1): the fault tolerance this engine relies on.
    )
    disable = None if progress is None else not progress
    merged: Rows | None = None
    seen = 0
    with tqdm(desc=f"{job.desc} (Ray)", unit="item", disable=disable, leave=False) as bar:
        for rows in mapped.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=options.prefetch):
            rows = {key: np.array(value) for key, value in rows.items()}  # writable: Ray's arrays are read-only
            merged = job.merge(merged, rows)
            count = len(next(iter(rows.values()))) if rows else 0
            seen += count
            bar.update(count)
    if merged is None:
        raise BadInputError("the Ray data set yielded no rows; pass a non-empty data set.")
    return merged


class Worker:
    """The actor: holds one copy of the model and maps batches with it."""

    def __init__(
        self,
        model: list[Any] | Callable[[], nn.Module],
        job: Job,
        options: RayOptions,
        gpu: bool,
    ) -> None:
        import ray

        built = ray.get(model[0]) if isinstance(model, list) else model()
        if not isinstance(built, nn.Module):
            raise BadInputError(f"the model factory returned a {type(built).__name__}, not a torch.nn.Module.")
        torch.set_num_threads(max(1, math.ceil(options.cpus_per_actor)))  # this actor's process, ours alone
        self.device = torch.device("cuda") if gpu and torch.cuda.is_available() else torch.device("cpu")
        self.model = built.to(self.device)
        self.job = job
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> Rows:
        options = self.options
        if options.input_column not in batch:
            raise BadInputError(
                f"the data set has columns {sorted(batch)}, no {options.input_column!r}; name the inputs' column "
                "with input_column=..."
            )
        inputs = torch.from_numpy(np.ascontiguousarray(batch[options.input_column]))
        labels = batch.get(options.label_column)
        label_tensor = None if labels is None else torch.from_numpy(np.asarray(labels)).reshape(-1).long()
        check_labels(self.job, inputs, label_tensor)
        ids = torch.from_numpy(np.asarray(batch[options.id_column])).long()
        with torch.no_grad():
            return self.job.map(self.model, Batch(inputs.to(self.device), label_tensor, ids))


def dataset_of(data: object, options: RayOptions, batch_size: int = 256) -> Any:
    """``data`` as a Ray data set with inputs, labels (when any) and an ``id`` column per item."""
    ray = require()
    if is_ray_dataset(data):
        dataset = data
        columns = dataset.columns()  # type: ignore[attr-defined]
        if options.input_column not in columns:
            raise BadInputError(
                f"the Ray data set has columns {columns}, no {options.input_column!r}; name the inputs' column "
                "with input_column=..."
            )
        if options.id_column in columns:
            return dataset
        # Numbered in the order it gives its rows: an all-to-all step; a data set that carries its own ids skips it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Dataset.zip: deprecated in favour of a join on a key we do not have
            numbered = ray.data.range(dataset.count()).rename_columns({"id": options.id_column})  # type: ignore[attr-defined]
            return dataset.zip(numbered)  # type: ignore[attr-defined]
    return ray.data.from_arrow(list(_tables(data, options, batch_size)))


def _tables(data: object, options: RayOptions, batch_size: int) -> Iterator[Any]:
    """In-memory data (tensors, pairs, DataLoaders) as Arrow tables, one per batch, with ids counted as read."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    seen = 0
    for inputs, labels in as_batches(data, batch_size):  # a block per batch: the actors share them out
        array = inputs.detach().cpu().numpy()
        columns: dict[str, Any] = {
            options.input_column: ArrowTensorArray.from_numpy(np.ascontiguousarray(array)),
            options.id_column: np.arange(seen, seen + len(array), dtype=np.int64),
        }
        if labels is not None:
            columns[options.label_column] = labels.numpy()
        seen += len(array)
        yield pa.table(columns)
