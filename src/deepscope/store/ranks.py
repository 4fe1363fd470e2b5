"""Several processes of one distributed job (the ranks of ``torchrun``) writing one run: who owns which tags, and
when the run has ended.

Rank 0 owns the run as a single process does (its lock, its info, every tag without a rank suffix). Every other
rank joins it as a writer of its own series only: the tags ``<tag>/rank<k>`` (what ``run.log(..., all_ranks=True)``
logs), so that no two writers ever add to, pack or create the same tag. The run's info lists the ranks that opened
it (``ranks``: rank -> ``"running"``, or the status it closed with); the one that closes last, under a lock that
serialises the ranks' closing, sets the run's ``status``. A rank that dies leaves ``"running"`` behind, and once no
rank holds the run a reader calls it ``"interrupted"``, as it does a single process that died.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SUFFIX = re.compile(r"/rank(\d+)$")

RUNNING = "running"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed job.

    Attributes:
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: how many processes the job has (more than one).
        job: what every rank of one job knows alike (the rendezvous' address and id), so that a rank does not join
            the run of an earlier job that had the same name; ``""`` when unknown.
    """

    rank: int
    world_size: int
    job: str = ""

    @property
    def owner(self) -> bool:
        """Whether this process owns the run (rank 0)."""
        return self.rank == 0


def tag_of(tag: str, rank: int) -> str:
    """The tag of ``rank``'s own series of ``tag``."""
    return f"{tag}/rank{rank}"


def owner_of(tag: str) -> int:
    """The rank whose tag this is: ``k`` for ``<tag>/rank<k>``, else 0."""
    found = _SUFFIX.search(tag)
    return int(found.group(1)) if found else 0


def mine(tag: str, rank: int | None) -> bool:
    """Whether the writer of ``rank`` (``None``: a single process, which owns every tag) may add to ``tag``."""
    return rank is None or owner_of(tag) == rank


def status(statuses: Iterable[str]) -> str | None:
    """The run's status once every rank that opened it has closed (``None`` while one is still running):
    ``"finished"`` if all finished, ``"failed"`` if one failed, else ``"interrupted"``."""
    closed = list(statuses)
    if RUNNING in closed:
        return None
    if all(s == "finished" for s in closed):
        return "finished"
    return "failed" if "failed" in closed else "interrupted"
