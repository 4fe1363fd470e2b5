"""Where this process is in a distributed job, for :class:`deepscope.Run`.

``torch.distributed``'s rank and world size once its process group is initialised; before that, what ``torchrun``
(and ``torch.multiprocessing`` launchers following its convention) tell each process: ``RANK`` and ``WORLD_SIZE``. So
a ``Run`` made before ``init_process_group`` knows its rank too. What the ranks of one job share is the rendezvous
they were given (``TORCHELASTIC_RUN_ID``, ``MASTER_ADDR``, ``MASTER_PORT``): it tells a run of this job from one of
an earlier job under the same name.
"""

from __future__ import annotations

import os

import torch

from ..errors import BadInputError
from ..store.ranks import Ranks

JOB_VARIABLES = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")


def current() -> Ranks | None:
    """This process's rank, world size and job; ``None`` outside a job of more than one process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _variable("RANK", 0), _variable("WORLD_SIZE", 1)
        if world >= 1 and not 0 <= rank < world:
            raise BadInputError(f"RANK={rank} is not a rank of WORLD_SIZE={world} processes (0 to {world - 1})")
    if world <= 1:
        return None
    return Ranks(rank, world, "|".join(os.environ.get(name, "") for name in JOB_VARIABLES).strip("|"))


def _variable(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise BadInputError(f"the environment variable {name}={value!r} is not a whole number") from None
