"""The one writer of a run: opens (or creates) its directory safely, then writes batches on a background thread.

The training thread only appends to an in-memory list under a lock (:meth:`Writer.put`); a daemon thread swaps
that list out and writes it in one transaction at least every ``flush_interval`` seconds, sooner when half of
``max_pending`` is waiting or when :meth:`Writer.flush` asks. When ``max_pending`` values are waiting the training
thread waits for the writer instead of dropping anything. A failed write (disk full, file removed, ...) stops the
writer and is raised by the next ``put``, ``flush`` or ``close``, saying how much was not stored; what was
committed before stays intact, because each batch is one transaction.

Where the batches go is a :class:`~deepscope.store.backend.WriteBackend` (SQLite: :mod:`deepscope.store.sqlite`,
which also checks, creates and locks the run directory); the queue, the thread, the order of each tag's points and
turning records into rows through their codecs are the writer's, the same for every backend.

In a distributed job every rank has a writer of its own (:mod:`deepscope.store.ranks`): rank 0's opens the run as a
single process's does; any other rank's waits until rank 0 of the same job has opened it, then joins it, adding
its own series only. Closing, each rank notes its status, and the last one sets the run's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from itertools import pairwise, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from .backend import StoredState, WriteBackend
from .locations import open_reader, open_writer
from .postgres import is_url
from .ranks import RUNNING, Ranks
from .ranks import status as ranks_status
from .records import codec_for
from .records.scalar import KIND as SCALAR

# How long the writer keeps trying to reach a store that cannot be reached before it gives up (and the next log call
# raises): long enough for a database server to restart.
RETRY_FOR = 300.0
# How long a rank other than 0 waits for rank 0 to open the run before it gives up: rank 0 may load data first.
JOIN_FOR = 600.0
# What the info of a distributed run says beyond a single process's (removed when one process resumes the run).
RANK_KEYS = ("world_size", "job", "ranks")

ScalarRow = tuple[str, int, int, float, float]  # tag, step, epoch (-1: none), wall time, value
_NO_POINTS = (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.float64))


class DeferredScalars:
    """Scalars whose values are still on their way from an accelerator: ``host`` is valid once ``event`` is done.

    The training thread queues the copy without waiting for it; the writer thread waits instead.
    """

    __slots__ = ("epoch", "event", "host", "steps", "tags", "wall")

    def __init__(self, tags: list[str], steps: list[int], epoch: int, wall: float, host: Any, event: Any) -> None:
        self.tags, self.steps, self.epoch, self.wall, self.host, self.event = tags, steps, epoch, wall, host, event

    def rows(self) -> list[ScalarRow]:
        self.event.synchronize()
        return list(zip(self.tags, self.steps, repeat(self.epoch), repeat(self.wall), self.host.tolist()))


@dataclass(frozen=True)
class ScalarBatch:
    """Many points of one scalar tag at once (an import, a bulk log), already as arrays."""

    tag: str
    steps: np.ndarray
    values: np.ndarray
    epochs: np.ndarray
    wall_times: np.ndarray


@dataclass(frozen=True)
class RankClosed:
    """Rank ``rank`` of a distributed job closing the run with ``status`` at ``when``."""

    rank: int
    status: str
    when: float


@dataclass(frozen=True)
class SetValue:
    """A key of the run's config (``table="config"``) or info (``table="run_info"``); ``value`` is JSON text or
    ``None`` to delete the key."""

    table: str
    key: str
    value: str | None


class Writer:
    """Owns a run directory for writing; see the module's docstring."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        flush_interval: float = 2.0,
        max_pending: int = 100_000,
        name: str | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        if not flush_interval > 0:
            raise StoreError(f"flush_interval must be a positive number of seconds, not {flush_interval!r}")
        if max_pending < 1:
            raise StoreError(f"max_pending must be at least 1, not {max_pending!r}")
        # Absolute: files are written later, by a thread, when the working directory may have changed (a notebook's
        # os.chdir); a relative path would put them in another folder than run.db.
        self.path = Path(name) if is_url(run_dir) and name else Path(run_dir).absolute()
        self.flush_interval = float(flush_interval)
        self.max_pending = int(max_pending)
        self.ranks = ranks
        if ranks is not None and not ranks.owner:
            _wait_for_owner(run_dir, name, ranks)
        self._store: WriteBackend = open_writer(run_dir, resume, name, None if ranks is None else ranks.rank)
        self.db = self._store.location
        self.state: StoredState = self._store.state
        try:
            self._store.begin(0)
            if ranks is None or ranks.owner:
                self._open_run(name)
            else:
                self._join_run(ranks)
            self._store.commit()
        except Exception as e:
            self._store.rollback()
            self._store.close()
            self._store.unlock()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot write to {self.db} ({e})") from e

        # The training thread takes the plain lock (cheap); waiting, in either direction, uses the condition on it.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._pending: list[Any] = []
        self._weight = 0
        self._seq = 0  # puts accepted so far
        self._committed = 0  # puts known to be in the database
        self._flush_wanted = 0
        self._stopping = False
        self._error: StoreError | None = None
        self._unwritten = 0
        self._last_commit = time.time()
        self._released = False
        self._thread = threading.Thread(target=self._run, name=f"deepscope-writer:{self.path.name}", daemon=True)
        self._thread.start()

    def _open_run(self, name: str | None) -> None:
        """Say who writes the run now; for rank 0, also the job, and that no other rank has joined yet."""
        now = time.time()
        info: dict[str, Any] = {"status": RUNNING, "pid": os.getpid(), "host": socket.gethostname(), "started_at": now}
        if self.state.created:
            info |= {"name": name or self.path.name, "created_at": now}
        if self.ranks is not None:
            info |= {"world_size": self.ranks.world_size, "job": self.ranks.job, "ranks": {"0": RUNNING}}
        for key, value in info.items():
            self._store.set_value("run_info", key, json.dumps(value))
        if self.ranks is None and not self.state.created:
            for key in RANK_KEYS:  # a distributed run resumed by one process is that process's now
                self._store.set_value("run_info", key, None)

    def _join_run(self, ranks: Ranks) -> None:
        """Add this rank to the ranks of the run, which rank 0 of the same job must hold open."""
        store = self._store
        store.exclusive()  # rank 0 cannot close the run meanwhile
        job, status = store.info_value("job"), store.info_value("status")
        if job != ranks.job:
            raise StoreError(f"{self.db} is the run of another distributed job; give each job's run its own name")
        if status != RUNNING:
            raise StoreError(
                f"rank 0 closed {self.db} ({status}) before rank {ranks.rank} opened it: open the Run on every rank "
                "before training, or on rank 0 only"
            )
        joined = store.info_value("ranks") or {}
        joined[str(ranks.rank)] = RUNNING
        store.set_value("run_info", "ranks", json.dumps(joined))

    # ---- the training thread's side -----------------------------------------------------------------------------

    def put(self, items: list[Any], weight: int) -> None:
        """Queue ``items`` (worth ``weight`` values); waits while ``max_pending`` values are already waiting."""
        with self._mutex:
            if self._error is not None or self._stopping:
                self._raise_closed()
            if self._weight and self._weight + weight > self.max_pending:
                self._wait_for_room(weight)
            self._pending.extend(items)
            self._weight += weight
            self._seq += 1
            if self._weight >= self.max_pending // 2:
                self._cond.notify_all()

    def _wait_for_room(self, weight: int) -> None:
        self._cond.notify_all()
        while self._weight and self._weight + weight > self.max_pending:
            if self._error is not None or self._stopping or not self._thread.is_alive():
                self._raise_closed()
            self._cond.wait(0.1)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed; raises ``StoreError`` if it cannot be."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flush_wanted = max(self._flush_wanted, target)
            self._cond.notify_all()
            while self._committed < target:
                if self._error is not None:
                    raise self._error
                if not self._thread.is_alive():
                    self._raise_closed()
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    raise StoreError(f"{self.db}: the writer did not catch up within {timeout} s")
                self._cond.wait(wait)

    def close(self, status: str = "finished") -> None:
        """Write the final status, drain the queue, stop the thread, close the file and release the run.

        Idempotent. Raises ``StoreError`` if anything logged could not be stored.
        """
        if not self._thread.is_alive() and self._released:
            if self._error is not None:
                raise self._error
            return
        try:
            if self._error is None and not self._stopping:
                if self.ranks is None:
                    info = {"status": status, "ended_at": time.time()}
                    self.put([SetValue("run_info", k, json.dumps(v)) for k, v in info.items()], 1)
                else:
                    self.put([RankClosed(self.ranks.rank, status, time.time())], 1)
        finally:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join()
            self._release()
        if self._error is not None:
            raise self._error

    @property
    def closed(self) -> bool:
        return self._stopping or self._error is not None

    def _raise_closed(self) -> None:
        if self._error is not None:
            raise self._error
        raise StoreError(f"the run at {self.path} is closed; open it again with resume=True to add to it")

    def _release(self) -> None:
        self._store.unlock()
        self._released = True

    # ---- the writer thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug here must reach the user, not hang their training loop
            with self._cond:
                if self._error is None:
                    self._error = StoreError(f"the writer of {self.db} stopped: {type(e).__name__}: {e}")
                    self._error.__cause__ = e
        finally:
            self._store.close()
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        next_commit = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                while not self._stopping:
                    if self._pending and (
                        self._flush_wanted > self._committed or self._weight >= self.max_pending // 2
                    ):
                        break
                    left = next_commit - time.monotonic()
                    if left <= 0:
                        if self._pending:
                            break
                        next_commit, left = time.monotonic() + self.flush_interval, self.flush_interval
                    self._cond.wait(left)
                batch, self._pending, self._weight = self._pending, [], 0
                seq, stopping = self._seq, self._stopping
                self._cond.notify_all()
            if batch:
                try:
                    self._write_until_stored(batch, seq, pack=stopping)
                except BaseException as e:  # every failure is kept and raised to the user
                    with self._cond:
                        self._unwritten = len(batch) + len(self._pending)
                        when = time.strftime("%H:%M:%S", time.localtime(self._last_commit))
                        self._error = StoreError(
                            f"writing to {self.db} failed: {type(e).__name__}: {e}. About {self._unwritten} "
                            f"logged items since the last write ({when}) are not in the store; everything "
                            "written before is intact."
                        )
                        self._error.__cause__ = e
                        self._cond.notify_all()
                    return
                self._last_commit = time.time()
            next_commit = time.monotonic() + self.flush_interval
            with self._cond:
                self._committed = seq
                self._cond.notify_all()
            if stopping:
                return

    def _write_until_stored(self, batch: list[Any], seq: int, pack: bool) -> None:
        """Write ``batch``; while the store cannot be reached (a database server restarting, a network outage),
        try again, waiting longer each time, for up to :data:`RETRY_FOR` seconds. Meanwhile logging goes on into
        memory until ``max_pending`` values wait, then waits too: nothing is dropped, and a batch whose commit went
        through unanswered is not written twice."""
        deadline, pause = None, 0.05
        while True:
            try:
                self._write(batch, seq, pack)
                return
            except Exception as e:
                if not self._store.transient(e):
                    raise
                if deadline is None:
                    deadline = time.monotonic() + RETRY_FOR
                    warnings.warn(
                        f"{self.db} cannot be reached ({type(e).__name__}: {e}); retrying for up to {RETRY_FOR:g} s. "
                        "Logging goes on and waits once max_pending values are waiting.",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                error = e
            while True:  # reach the store again
                if time.monotonic() > deadline:
                    raise error
                time.sleep(pause)
                pause = min(2 * pause, 2.0)
                try:
                    if self._store.recover(seq):
                        return
                    break
                except Exception as e:
                    if not self._store.transient(e):
                        raise
                    error = e

    def _write(self, batch: list[Any], seq: int, pack: bool = False) -> None:
        """Write ``batch`` in one transaction; with ``pack`` (the run is closing) also fold every tag's remaining
        loose scalar points into a last, shorter chunk, so a finished run reads as packed blobs only."""
        store = self._store
        store.begin(seq)
        try:
            rows: list[ScalarRow] = []
            series: dict[int, list[tuple[np.ndarray, ...]]] = {}
            for item in batch:
                if type(item) is tuple:
                    rows.append(item)
                elif type(item) is DeferredScalars:
                    rows.extend(item.rows())
                else:
                    if rows:  # keep each tag's points in the order they were logged
                        self._group_rows(rows, series)
                        rows = []
                    self._write_item(item, series)
            if rows:
                self._group_rows(rows, series)
            for tag_id, parts in series.items():
                store.append_scalars(tag_id, *(np.concatenate(column) for column in zip(*parts)), pack=pack)
            if pack:
                for tag_id in [t for t in store.unpacked() if t not in series]:
                    store.append_scalars(tag_id, *_NO_POINTS, pack=True)
            store.commit()
        except BaseException:
            store.rollback()
            raise

    def _group_rows(self, rows: list[ScalarRow], series: dict[int, list[tuple[np.ndarray, ...]]]) -> None:
        n = len(rows)
        tags = list(map(itemgetter(0), rows))
        ids_of = {name: self._store.tag(name, SCALAR) for name in set(tags)}
        ids = np.fromiter(map(ids_of.__getitem__, tags), dtype=np.int64, count=n)
        columns = tuple(
            np.fromiter(map(itemgetter(k), rows), dtype=dtype, count=n)
            for k, dtype in ((1, np.int64), (4, np.float64), (2, np.int64), (3, np.float64))
        )
        if (ids == ids[0]).all():
            series.setdefault(int(ids[0]), []).append(columns)
            return
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ids)) + 1, [len(ids)]))
        for a, b in pairwise(starts):
            part = order[a:b]
            series.setdefault(int(ids[a]), []).append(tuple(column[part] for column in columns))

    def _write_item(self, item: Any, series: dict[int, list[tuple[np.ndarray, ...]]]) -> None:
        store = self._store
        if isinstance(item, ScalarBatch):
            tag_id = store.tag(item.tag, SCALAR)
            series.setdefault(tag_id, []).append((item.steps, item.values, item.epochs, item.wall_times))
        elif isinstance(item, SetValue):
            store.set_value(item.table, item.key, item.value)
        elif isinstance(item, RankClosed):
            self._close_rank(item)
        else:
            codec = codec_for(type(item))
            if codec is None:  # pragma: no cover - the Run only queues registered records
                raise TypeError(f"the store cannot write {type(item).__name__}")
            tag_id = store.tag(item.tag, codec.kind)
            step = int(item.step) if codec.stepped else 0
            store.put(codec.table, tag_id, codec.encode(item, store.files(tag_id, step)))

    def _close_rank(self, closed: RankClosed) -> None:
        """Note this rank's status; the last rank of the run to close sets the run's."""
        store = self._store
        store.exclusive()  # two ranks closing at once: the second reads what the first wrote
        joined = store.info_value("ranks") or {}
        joined[str(closed.rank)] = closed.status
        store.set_value("run_info", "ranks", json.dumps(dict(sorted(joined.items(), key=lambda kv: int(kv[0])))))
        status = ranks_status(joined.values())
        if status is not None:
            store.set_value("run_info", "status", json.dumps(status))
            store.set_value("run_info", "ended_at", json.dumps(closed.when))


def _wait_for_owner(location: str | os.PathLike[str], name: str | None, ranks: Ranks) -> None:
    """Wait until rank 0 of the job ``ranks`` names holds the run open, for up to :data:`JOIN_FOR` seconds."""
    deadline, seen, pause = time.monotonic() + JOIN_FOR, "nothing", 0.05
    while True:
        try:
            reader = open_reader(location, name)
            try:
                info = reader.info()  # "interrupted" where it says running but nobody holds it
            finally:
                reader.close()
            if info.get("job") == ranks.job and info.get("status") != "interrupted":
                return  # open (or closed already: joining says so)
            seen = f"a run with status {info.get('status')!r} of job {info.get('job')!r}"
        except StoreError as e:
            seen = str(e)
        if time.monotonic() > deadline:
            raise StoreError(
                f"rank {ranks.rank} waited {JOIN_FOR:g} s for rank 0 to open the run at {location} (job "
                f"{ranks.job!r}) and found {seen}. Create the Run on rank 0 too, with the same location and name; "
                "pass distributed=False for a run of this process alone"
            )
        time.sleep(pause)
        pause = min(2 * pause, 1.0)  # a database is asked about once a second at most
