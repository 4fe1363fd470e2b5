"""What the board serves: the runs under a directory, or the runs in a PostgreSQL database.

:mod:`deepscope.dashboard.api` reads through a :class:`Source` only: the listing of runs, a run's reader (the
store's backend seam: :class:`deepscope.store.Reader`), the change tokens of runs (keys of the API's caches, so
that a finished run is read once, not per request), and a record's file by its reference. A run name or a file
reference from a request is checked here: a directory's runs and files must lie inside it (:func:`run_dir`,
:func:`file_path`); a database's runs and files are rows, found by name and reference, never paths on this machine.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadInputError, StoreError
from ..store import Reader, RunSummary, schema
from ..store.catalog import run_folders, summary
from ..store.postgres import Database as PostgresDatabase
from ..store.postgres import is_url
from ..store.sqlite import live_stamp, stamp
from .security import private


class Shared:
    """Concurrent calls for the same key share one computation, never one that started before they were made.

    A call joins the computation of its key in flight only if that one started after the call arrived (so its
    answer is as fresh as one the call would compute itself); otherwise it waits for it to end, then starts the next
    one or joins one another waiting call started. Sixteen viewers polling a live run read it about once per round,
    not sixteen times, and each still sees every write that landed before it asked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock = 0
        self._flights: dict[Any, _Flight] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            self._clock += 1
            arrived = self._clock
        while True:
            with self._lock:
                flight = self._flights.get(key)
                mine = flight is None
                if flight is None:
                    self._clock += 1
                    flight = self._flights[key] = _Flight(self._clock)
            if mine:
                try:
                    flight.value = make()
                except BaseException as e:
                    flight.error = e
                    raise
                finally:
                    with self._lock:
                        del self._flights[key]
                    flight.done.set()
                return flight.value
            flight.done.wait()
            if flight.started > arrived:
                if flight.error is not None:
                    raise flight.error
                return flight.value


class _Flight:
    def __init__(self, started: int) -> None:
        self.started = started
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


@dataclass(frozen=True)
class Listing:
    """Every run of a source as one listing saw them: their summaries, sorted by name, and each run's change token
    (:meth:`deepscope.store.Reader.stamp`) taken before its summary was read, so what was read with the listing (its
    tags, its config) may be kept under that token."""

    runs: list[RunSummary]
    stamps: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)


class NotFound(LookupError):
    """A run, tag or file that the request names does not exist in the served store (HTTP 404)."""


class Source(Protocol):
    """Where the board's runs are."""

    @property
    def shown(self) -> str:
        """What the board serves, in messages (a database's URL without its password)."""
        ...

    def runs(self) -> list[RunSummary]:
        """Every run, sorted by name (:func:`deepscope.store.list_runs`)."""
        ...

    def listing(self) -> Listing:
        """Every run with its change token, from one listing (shared by the requests that ask at the same time)."""
        ...

    def reader(self, run: str) -> Reader:
        """A reader of the run ``run`` (a name as :meth:`runs` lists it); :class:`NotFound` if there is none."""
        ...

    def stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        """Each run's change token (:meth:`deepscope.store.Reader.stamp`; ``None`` while written, and for a run that
        is not there), without opening the runs one by one where the store can say it at once."""
        ...

    def live_stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        """Each run's token that changes with every commit, written or not (:meth:`deepscope.store.Reader.live_stamp`:
        what a live page watches); ``None`` for a run that is not there."""
        ...

    def file(self, run: str, path: str) -> Path | bytes:
        """A record's file by its reference (``files/...``): a path inside the run directory, or its bytes."""
        ...

    def arrays(self, run: str, path: str) -> Path | io.BytesIO:
        """A record's ``.npz`` file (an embedding), for ``numpy.load``, and what names its contents in a cache."""
        ...

    def file_key(self, run: str, path: str) -> tuple[Any, ...]:
        """What names a record file's contents in a cache (files are written once, under fresh names)."""
        ...

    def private(self, message: str) -> str:
        """An error message fit to send: no absolute path of this machine in it (:func:`security.private`)."""
        ...


class Directory:
    """The runs under a directory (one SQLite database each).

    Listing the runs reads each run's info, tags and config only when its change token
    (:func:`~deepscope.store.sqlite.stamp`, a few ``stat`` calls) says it changed since the last listing, so a board
    polled by many viewers opens only the runs being written, not every run on every poll. Requests that ask at the
    same time share one listing (:class:`Shared`): a page's first requests (the runs, the views, a view's answer)
    walk the directory once or twice, not once each, and each still sees every run written before it asked.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shown = str(root)
        self._listed: dict[Path, tuple[tuple[Any, ...], RunSummary]] = {}  # run directory -> (stamp, summary)
        self._shared = Shared()
        self.listings = 0  # how many listings were made (walks of the directory): tests and benchmarks count them

    def runs(self) -> list[RunSummary]:
        return list(self.listing().runs)

    def listing(self) -> Listing:
        found: Listing = self._shared.get("runs", self._listing)
        return found

    def _listing(self) -> Listing:
        self.listings += 1
        listed, found, stamps = {}, [], {}
        for directory, names in run_folders(self.root):
            token = stamp(directory, names)  # taken before reading: a write that lands meanwhile changes it
            known = self._listed.get(directory)
            if token is not None and known is not None and known[0] == token:
                run = known[1]
            else:
                run = summary(self.root, directory)
                if run.error is not None:  # named relative to the served directory, never by absolute path
                    run = replace(run, error=self.private(run.error))
            if token is not None:
                listed[directory] = (token, run)
            found.append(run)
            stamps[run.name] = token
        self._listed = listed  # runs gone since are forgotten
        return Listing(sorted(found, key=lambda run: run.name), stamps)

    def reader(self, run: str) -> Reader:
        return Reader(run_dir(self.root, run))

    def stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        # A listing and a stat or two per run; a run that is not there raises NotFound when it is read.
        return list(self._shared.get(("stamps", *runs), lambda: [stamp(run_dir(self.root, run)) for run in runs]))

    def live_stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        found: list[tuple[Any, ...] | None] = []
        for run in runs:
            try:
                found.append(live_stamp(run_dir(self.root, run)))
            except NotFound:  # gone since it was listed
                found.append(None)
        return found

    def file(self, run: str, path: str) -> Path:
        return file_path(self.root, run, path)

    def arrays(self, run: str, path: str) -> Path:
        return file_path(self.root, run, path)

    def file_key(self, run: str, path: str) -> tuple[Any, ...]:
        located = self.arrays(run, path)
        return (str(located), located.stat().st_mtime_ns)

    def private(self, message: str) -> str:
        return private(message, (str(self.root),))


class Database:
    """The runs in a PostgreSQL database, read over one connection."""

    def __init__(self, url: str) -> None:
        self.database = PostgresDatabase(url)
        self.shown = self.database.shown
        self.database.list_runs()  # reach it now: a wrong URL is an error at start, not on the page

    def runs(self) -> list[RunSummary]:
        return [
            RunSummary(name, Path(name), status, created_at, tags)
            for name, status, created_at, tags in self.database.list_runs()
        ]

    def reader(self, run: str) -> Reader:
        try:
            return Reader.over(self.database.reader(run), run)
        except StoreError as e:
            raise NotFound(f"no run named {run!r}" + ("" if "no deepscope run" in str(e) else f" ({e})")) from e

    def stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        found = self.database.stamps(list(runs))
        return [found.get(run) for run in runs]

    def listing(self) -> Listing:
        # Nothing kept is read with the listing (no config): its tokens, taken after it, still precede every read.
        runs = self.runs()
        stamps = self.database.stamps([run.name for run in runs])
        return Listing(runs, {run.name: stamps.get(run.name) for run in runs})

    def live_stamps(self, runs: Sequence[str]) -> list[tuple[Any, ...] | None]:
        found = self.database.live_stamps(list(runs))
        return [found.get(run) for run in runs]

    def file(self, run: str, path: str) -> bytes:
        with self.reader(run) as reader:
            try:
                return reader.file(path)
            except (BadInputError, StoreError) as e:
                raise NotFound(f"run {run!r} has no file {path!r}") from e

    def arrays(self, run: str, path: str) -> io.BytesIO:
        return io.BytesIO(self.file(run, path))

    def file_key(self, run: str, path: str) -> tuple[Any, ...]:
        return (self.database.url, run, path)

    def private(self, message: str) -> str:
        return private(message, ())  # runs and files are rows: only a stray path of this machine to cut

    def close(self) -> None:
        self.database.close()


def source(root: str | os.PathLike[str] | Source) -> Source:
    """What ``root`` names: a served source as it is, a PostgreSQL URL's database, else a directory of runs (a
    :class:`BadInputError` saying what is wrong with it)."""
    if isinstance(root, Directory | Database):
        return root
    if is_url(root):
        return Database(str(root))
    path = Path(root).expanduser()  # type: ignore[arg-type]
    if not path.is_dir():
        raise BadInputError(f"{path} is not a directory: give the directory that holds your runs")
    return Directory(path.resolve())


# ---- paths: nothing outside the served directory ----------------------------------------------------------------


def run_dir(root: Path, run: str) -> Path:
    """The directory of run ``run`` (a name as :func:`deepscope.store.list_runs` lists it) under ``root``.

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
    if any(os.path.islink(base.joinpath(*parts[: k + 1])) for k in range(len(parts))):
        resolved = candidate.resolve()  # a symlink on the way: where it really leads must be inside too
    else:
        resolved = candidate  # the root is resolved and no part below it is a link: a few lstat calls, not realpath
    if not resolved.is_relative_to(base) or not schema.db_path(resolved).is_file():
        raise NotFound(f"no run named {run!r}")
    return resolved


def file_path(root: Path, run: str, path: str) -> Path:
    """A file of a run's ``files/`` directory, given by its path relative to the run directory.

    Raises:
        NotFound: for a path that is absolute, contains ``..``, leaves the run's ``files/`` by its real path (a
            symlink out of it, or a ``files/`` that is itself a symlink), or is not a file.
    """
    directory = run_dir(root, run)
    parts = _parts(path)
    if parts is None:
        raise NotFound(f"run {run!r} has no file {path!r}")
    files = directory / schema.FILES_DIR  # the run's own folder: a files/ that is a symlink leads elsewhere
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
