"""The Ray engine of :mod:`deepscope.engine`: a job's ``map`` on a warm pool of Ray actors fed the data's blocks.

``run(job, model, data, progress, options) -> Rows``:

* the model goes to the object store once (``ray.put``) and each actor deserialises it once when it starts; a
  factory callable (no arguments, returns the model) is called on each actor instead;
* one GPU per actor when the cluster has GPUs (the model moved to it), CPU actors otherwise, each with
  ``cpus_per_actor`` CPUs and as many torch threads;
* the pool stays warm after the call: the next call with the same model (the same object, with the same weights
  and modes), the same pool options and the same Ray session reuses its actors, so a session of calls pays their
  start (a new process importing torch and deepscope) once. One pool is kept at a time, since its actors hold
  CPUs that a second pool would wait for: a call that needs another closes it first. :func:`close` (or
  :func:`deepscope.engine.close_pools`) ends it; so do ``ray.shutdown()`` and the interpreter's exit;
* the blocks: a Ray data set's blocks as Ray Data produces them (``iter_internal_ref_bundles``: streamed, and never
  through the driver), which each actor cuts into ``job.batch_size`` batches; in-memory data as runs of the
  batches this process would map (:func:`run_lengths`: up to 16 batches a block, fewer towards the end), each run
  one object in the store. At most ``prefetch`` blocks wait per actor;
* each actor folds a block's rows with the job's ``combine`` (top patches: each unit's top ``k`` of the block) and
  sends them back as one set of rows: a call, an object and a merge per block, not per batch;
* items are identified by the data set's ``id`` column, or numbered in block order from each block's row count
  (metadata the driver has): no extra step, and nothing that waits for the CPUs the pool holds;
* Ray restarts an actor that dies and reruns its unfinished blocks (``max_restarts`` / ``max_task_retries``
  unlimited); a block's rows reach the driver only once its call has returned, so nothing is counted twice;
* :func:`fetch`: chosen items' inputs by id, read again from the blocks that hold them (top patches' images), on
  the warm pool's actors.

Ray is imported here only; without it the calls say which extra to install.
"""

from __future__ import annotations

import atexit
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batches import batches as as_batches
from .engine import Batch, Job, Merging, RayOptions, Rows, check_labels, concat, is_ray_dataset
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


@dataclass(frozen=True)
class Block:
    """One block to map: an object-store reference (or, in a test, the block itself) to a Ray data set's block or to
    a list of in-memory batches (dicts of columns, ids included), the rows of it to take (``None``: all), and the
    id of its first row when the data set has no ``id`` column."""

    ref: Any
    rows: tuple[int, int] | None
    start: int


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
    _check_room(data, options)
    pool = warm_pool(model, options)
    mapper = ray.put(replace(job, merge=concat))  # the job's own merge (maybe a file writer) stays here; sent once
    disable = None if progress is None else not progress
    merging = Merging(job.merge)
    pending: dict[Any, int] = {}
    load = [0] * len(pool.actors)
    with tqdm(desc=f"{job.desc} (Ray)", unit="item", disable=disable, leave=False) as bar:

        def finish(ready: list[Any]) -> None:
            for ref in ready:
                load[pending.pop(ref)] -= 1
                items, parts = ray.get(ref)
                for shared in parts:  # copies of the store's read-only arrays, as torch wants them
                    merging.add({key: np.require(value, requirements=["W"]) for key, value in shared.items()})
                bar.update(items)

        for block in blocks(data, options, job.batch_size, len(pool.actors)):
            while len(pending) >= len(pool.actors) * max(1, options.prefetch):
                ready, _ = ray.wait(list(pending), num_returns=1)
                finish(ready)
            actor = load.index(min(load))
            pending[pool.actors[actor].map.remote(mapper, block, options)] = actor
            load[actor] += 1
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            finish(ready)
    merged = merging.result()
    if merged is None:
        raise BadInputError("the Ray data set yielded no rows; pass a non-empty data set.")
    return merged


class Worker:
    """The actor: holds one copy of the model and maps blocks with it."""

    def __init__(self, model: list[Any] | Callable[[], nn.Module], threads: int, gpu: bool) -> None:
        import ray

        built = ray.get(model[0]) if isinstance(model, list) else model()
        if not isinstance(built, nn.Module):
            raise BadInputError(f"the model factory returned a {type(built).__name__}, not a torch.nn.Module.")
        torch.set_num_threads(threads)  # this actor's process, ours alone
        self.device = torch.device("cuda") if gpu and torch.cuda.is_available() else torch.device("cpu")
        self.model = built.to(self.device)

    def map(self, job: Job, block: Block, options: RayOptions) -> tuple[int, list[Rows]]:
        """The block's item count and rows: one :data:`Rows` per batch of ``job.batch_size`` items, or, for a job
        with a ``combine``, the block's batches combined into one."""
        merging = Merging(job.combine) if job.combine is not None else None
        out, items = [], 0
        for inputs, labels, ids in block_batches(block, options, job.batch_size):
            label_tensor = None if labels is None else labels.long()
            check_labels(job, inputs, label_tensor)
            with torch.no_grad():
                rows = job.map(self.model, Batch(inputs.to(self.device), label_tensor, ids))
            if merging is None:
                out.append(rows)
            else:
                merging.add(rows)
            items += len(ids)
        combined = None if merging is None else merging.result()
        return items, out if combined is None else [combined]

    def pick(self, blocks: list[Block], wanted: np.ndarray, options: RayOptions) -> dict[str, np.ndarray]:
        """The ids and inputs of the rows of ``blocks`` whose id is in ``wanted`` (:func:`fetch`)."""
        return _pick_rows(blocks, wanted, options)


def block_batches(block: Block, options: RayOptions, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
    """A block's ``(inputs, labels or None, ids)`` batches: the driver's own batches for in-memory data, cut by
    ``batch_size`` for a Ray data set's block. Inputs and labels are writable copies of the store's arrays."""
    import ray

    data = ray.get(block.ref) if isinstance(block.ref, ray.ObjectRef) else block.ref
    parts = data if isinstance(data, list) else [block_columns(block, options, data)]
    for columns in parts:
        inputs_all, ids_all = columns[options.input_column], columns[options.id_column]
        labels_all = columns.get(options.label_column)
        step = max(1, len(ids_all)) if isinstance(data, list) else batch_size
        for start in range(0, len(ids_all), step):
            end = start + step
            inputs = torch.from_numpy(np.array(inputs_all[start:end]))
            labels = None if labels_all is None else torch.from_numpy(np.array(labels_all[start:end])).reshape(-1)
            yield inputs, labels, torch.from_numpy(np.array(ids_all[start:end])).long()


def block_columns(block: Block, options: RayOptions, data: Any = None) -> dict[str, np.ndarray]:
    """A Ray data set's block (``data``: its contents, when already read) as numpy arrays (its slice of rows),
    with an ``id`` column counted from ``block.start`` when the data set has none."""
    import ray
    from ray.data.block import BlockAccessor

    if data is None:
        data = ray.get(block.ref) if isinstance(block.ref, ray.ObjectRef) else block.ref
    accessor = BlockAccessor.for_block(data)
    if block.rows is not None:
        accessor = BlockAccessor.for_block(accessor.slice(*block.rows, copy=False))
    columns = accessor.to_numpy()
    if options.input_column not in columns:
        raise BadInputError(
            f"the data set has columns {sorted(columns)}, no {options.input_column!r}; name the inputs' column "
            "with input_column=..."
        )
    if options.id_column not in columns:
        count = len(columns[options.input_column])
        columns[options.id_column] = np.arange(block.start, block.start + count, dtype=np.int64)
    return columns


def blocks(data: object, options: RayOptions, batch_size: int, actors: int = 1) -> Iterator[Block]:
    """``data``'s blocks in order: a Ray data set's as Ray Data streams them, numbered from their row counts;
    in-memory data as runs of its batches (:func:`run_lengths`), each put in the object store as one object."""
    ray = require()
    if not is_ray_dataset(data):
        split = as_batches(data, batch_size)
        seen, run, size = 0, [], 0
        lengths = run_lengths(split.count, actors)
        wanted = next(lengths)
        for inputs, labels in split:
            array = inputs.detach().cpu().numpy()
            columns = {options.input_column: array, options.id_column: np.arange(seen, seen + len(array))}
            if labels is not None:
                columns[options.label_column] = labels.numpy()
            seen += len(array)
            run.append(columns)
            size += array.nbytes
            if len(run) >= wanted or size >= BLOCK_BYTES:
                yield Block(ray.put(run), None, 0)
                run, size = [], 0
                wanted = next(lengths)
        if run:
            yield Block(ray.put(run), None, 0)
        return
    columns = data.columns()  # type: ignore[attr-defined]
    if options.input_column not in columns:
        raise BadInputError(
            f"the Ray data set has columns {columns}, no {options.input_column!r}; name the inputs' column with "
            "input_column=..."
        )
    _remote_functions()
    start = 0
    for bundle in data.iter_internal_ref_bundles():  # type: ignore[attr-defined]
        # Older Ray gives (ref, metadata) pairs and no slices; Ray 2.60 a BlockEntry and a slice (or None) per block.
        parts = getattr(bundle, "slices", None) or [None] * len(bundle.blocks)
        for entry, part in zip(bundle.blocks, parts, strict=True):
            ref, metadata = entry if isinstance(entry, tuple) else (entry.ref, entry.metadata)
            rows = None if part is None else (part.start_offset, part.end_offset)
            count = part.num_rows if part is not None else metadata.num_rows
            if count is None:  # a block whose metadata lacks its size: counted where it is
                count = ray.get(_count.remote(ref))
            if count:
                yield Block(ref, rows, start)
            start += count


BLOCK_BATCHES = 16
"""The most batches of in-memory data in one block (one object in the store, one actor call)."""
BLOCK_BYTES = 64 << 20
"""A block of in-memory data ends once its inputs reach this size."""


def run_lengths(batches: int | None, actors: int) -> Iterator[int]:
    """How many batches each next block of in-memory data takes: fewer blocks cost Ray less (a call, an object in
    the store and its rows sent back per block), but the last blocks must be short, or one actor still maps a long
    block when the others are done. With the number of batches known, each block takes its share of what is left
    (guided scheduling: a quarter of an actor's share, down to one batch), at most :data:`BLOCK_BATCHES`;
    unknown, 4."""
    left = batches
    while True:
        if left is None:
            yield 4
            continue
        size = max(1, min(BLOCK_BATCHES, left // (4 * max(1, actors))))
        left = max(0, left - size)
        yield size


def _count_rows(block: Any) -> int:
    from ray.data.block import BlockAccessor

    return int(BlockAccessor.for_block(block).num_rows())


def _pick_rows(blocks: list[Block], wanted: np.ndarray, options: RayOptions) -> dict[str, np.ndarray]:
    """The ids and inputs of the rows of ``blocks`` whose id is in ``wanted``."""
    ids, inputs = [], []
    for block in blocks:
        columns = block_columns(block, options)
        block_ids = np.asarray(columns[options.id_column]).astype(np.int64)
        hit = np.isin(block_ids, wanted)
        ids.append(block_ids[hit])
        inputs.append(np.array(columns[options.input_column][hit]))
    return {"id": np.concatenate(ids), "input": np.concatenate(inputs)}


_count: Any = None
_pick: Any = None


def _remote_functions() -> None:
    """The stateless tasks (declared once Ray is imported); they take no CPU, so they never wait for the pool's."""
    global _count, _pick
    if _pick is None:
        ray = require()
        _count = ray.remote(num_cpus=0)(_count_rows)
        _pick = ray.remote(num_cpus=0)(_pick_rows)


def fetch(data: object, ids: np.ndarray, options: RayOptions, batch_size: int) -> dict[int, torch.Tensor]:
    """The inputs of the items ``ids`` of a Ray data set, by id: a second pass that reads only the blocks that can
    hold them (every block when the data set has its own ``id`` column), picked where the blocks are."""
    ray = require()
    _remote_functions()
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    own_ids = options.id_column in data.columns()  # type: ignore[attr-defined]
    last = int(wanted[-1]) if len(wanted) else -1
    # A few calls, each reading a share of the blocks: the warm pool's actors when there are some (torch and
    # deepscope loaded), else as many tasks. Not a task per block: tasks that take no CPU all start at once, each a
    # new worker process importing torch (64 blocks: 64 processes, enough to run a small machine out of memory).
    actors = _warm.actors if _warm is not None and _warm.actors else []
    shares: list[list[Block]] = [[] for _ in range(max(1, len(actors)) if actors else 2)]
    for number, block in enumerate(blocks(data, options, batch_size)):
        if not own_ids and block.start > last:
            break
        shares[number % len(shares)].append(block)
    found = [
        actors[n].pick.remote(share, wanted, options) if actors else _pick.remote(share, wanted, options)
        for n, share in enumerate(shares)
        if share
    ]
    inputs: dict[int, torch.Tensor] = {}
    for rows in ray.get(found):
        for i, x in zip(rows["id"].tolist(), rows["input"], strict=True):
            inputs[int(i)] = torch.from_numpy(np.array(x))
    return inputs


def pool_size(options: RayOptions, gpus: int) -> int:
    """How many actors a pool of ``options`` has on a cluster of ``gpus`` GPUs: the option, else one per GPU, else 2."""
    return options.actors or (gpus or 2)


def _check_room(data: object, options: RayOptions) -> None:
    """A clear error instead of a wait for ever: a lazy data set's read tasks need CPUs the pool does not hold."""
    ray = require()
    from ray.data.dataset import MaterializedDataset

    if not is_ray_dataset(data) or isinstance(data, MaterializedDataset):
        return
    resources = ray.cluster_resources()
    actors = pool_size(options, int(resources.get("GPU", 0)))
    cpus = resources.get("CPU", 0)
    if actors * options.cpus_per_actor >= cpus:
        raise BadInputError(
            f"the actor pool would hold all {cpus:g} CPUs of the cluster ({actors} actors x "
            f"{options.cpus_per_actor:g}) and this data set computes its blocks (reads files, maps rows) in tasks "
            "that need CPUs too: pass fewer actors or a smaller cpus_per_actor in RayOptions, or "
            "dataset.materialize() first."
        )


@dataclass
class Pool:
    """A warm actor pool: the model it was made for (kept, to tell whether the next call's is the same), the key
    the next call must match, the model's copy in the object store (kept for the actors' restarts), the actors."""

    source: object
    key: tuple[Any, ...]
    shipped: Any
    actors: list[Any]

    def close(self) -> None:
        ray = require()
        if ray.is_initialized() and _session(ray) == self.key[0]:  # else gone with its session
            for actor in self.actors:
                ray.kill(actor)
        self.actors = []


def _session(ray: Any) -> tuple[str, str]:
    """This Ray session: the job and the driver's node (a job id repeats after ``ray.shutdown()`` and
    ``ray.init()``; a node id is new with each start)."""
    context = ray.get_runtime_context()
    return (context.get_job_id(), context.get_node_id())


_warm: Pool | None = None
_at_exit = False


def _fingerprint(model: object, options: RayOptions, gpus: int) -> tuple[Any, ...]:
    """What a warm pool must match to serve a call: the Ray session, the pool's options, and for a model its
    tensors' identities and version counters (bumped by every in-place change: an optimizer's step, a
    ``load_state_dict``) and its modules' modes. A factory is matched by identity only."""
    ray = require()
    session = _session(ray)
    state: tuple[Any, ...] = ()
    if isinstance(model, nn.Module):
        tensors = model.state_dict(keep_vars=True).items()
        state = (
            tuple((name, t.data_ptr(), t._version) for name, t in tensors),
            tuple(module.training for module in model.modules()),
        )
    # The pool's size, not the option: RayOptions() and RayOptions(actors=2) make the same pool on CPUs.
    return (session, id(model), state, pool_size(options, gpus), options.cpus_per_actor, gpus)


def warm_pool(model: nn.Module | Callable[[], nn.Module], options: RayOptions) -> Pool:
    """The warm pool for ``model`` and ``options``: the one kept from an earlier call when it matches, else a new
    one (the kept one closed first)."""
    global _warm, _at_exit
    ray = require()
    if not ray.is_initialized():
        ray.init()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    key = _fingerprint(model, options, gpus)
    if _warm is not None and _warm.source is model and _warm.key == key and _warm.actors:
        return _warm
    close()
    size = pool_size(options, gpus)
    if options.cpus_per_actor <= 0:
        raise BadInputError(f"cpus_per_actor={options.cpus_per_actor}; pass a positive number of CPUs per actor.")
    shipped = [ray.put(model)] if isinstance(model, nn.Module) else model  # in a list: Ray passes it unresolved
    actor_class = ray.remote(
        num_cpus=options.cpus_per_actor, num_gpus=1 if gpus else 0, max_restarts=-1, max_task_retries=-1
    )(Worker)
    threads = max(1, math.ceil(options.cpus_per_actor))
    actors = [actor_class.remote(shipped, threads, bool(gpus)) for _ in range(size)]
    _warm = Pool(model, key, shipped, actors)
    if not _at_exit:
        atexit.register(close)
        _at_exit = True
    return _warm


def close() -> None:
    """End the warm actor pool, if any (its actors and the model's copy in the object store)."""
    global _warm
    if _warm is not None:
        pool, _warm = _warm, None
        pool.close()
