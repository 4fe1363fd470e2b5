"""Several processes of a distributed job logging into one run (deepscope.store.ranks), on SQLite (a run directory,
ranks as WAL writers) and on PostgreSQL (a throwaway server, tests/pg_cluster.py; skipped, saying why, where none can
be started).

The torchrun tests train a small DDP model with gloo on 127.0.0.1 in two processes (tests/fixtures/ddp_train.py);
the others play the ranks in this process, each Run told its rank by the variables torchrun sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BackendStore
from torch import nn

import deepscope as ds
from deepscope.errors import BadInputError, StoreError
from deepscope.store import Reader, list_runs, writer

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "fixtures" / "ddp_train.py"
BACKENDS = ["sqlite", "postgresql"]


# ---- two ranks of torchrun, training a DDP model ----------------------------------------------------------------


def _torchrun(store: BackendStore, out: Path, jobs: list[tuple[str, bool]]) -> subprocess.CompletedProcess[str]:
    """One torchrun of two ranks running ``jobs`` (run name, whether rank 1 kills itself) one after the other."""
    described = []
    for name, kill in jobs:
        where = store.at(name)
        described.append({"label": name, "location": str(where["path"]), "name": where.get("name"), "kill": kill})
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DEEPSCOPE_STORE"):
        env.pop(variable, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*command, "--monitor-interval=0.2", str(WORKER), str(out), json.dumps(described)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def torchrun_job(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BackendStore, Path, subprocess.CompletedProcess[str]]:
    """One torchrun per backend for both torchrun tests (starting its three processes is most of its time): a DDP
    training into the run "ddp", then, in the same processes, one into "killed" where rank 1 kills itself mid-run.
    The store, the folder where each job's ranks wrote what they saw (``<run>/rank<k>.json``), and how it ended."""
    url = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    root = tmp_path_factory.mktemp(f"torchrun-{request.param}")
    store, seen = BackendStore(request.param, root, url), root / "seen"
    return store, seen, _torchrun(store, seen, [("ddp", False), ("killed", True)])


def test_torchrun_ranks_log_into_one_run_each_point_once_finished_after_both_closed(torchrun_job):
    store, out, done = torchrun_job
    # The launch fails, as the second job's rank 1 kills itself; this job ended before it, both ranks with it.
    written = [out / "ddp" / f"rank{k}.json" for k in (0, 1)]
    assert all(path.exists() for path in written), done.stdout + done.stderr
    seen = [json.loads(path.read_text()) for path in written]
    assert [(s["rank"], s["world_size"]) for s in seen] == [(0, 2), (1, 2)]  # known before init_process_group
    # The status: running while rank 1 still holds the run, finished once it has closed too.
    assert seen[0]["after_rank_0_closed"] == "running"
    assert seen[1]["before_rank_1_closed"] == "running"
    assert seen[1]["after_rank_1_closed"] == "finished"
    steps = list(range(len(seen[0]["losses"])))
    with store.reader("ddp") as reader:
        info, tags = reader.info(), reader.tags()
        assert info["status"] == "finished" and info["world_size"] == 2
        assert info["ranks"] == {"0": "finished", "1": "finished"}
        assert reader.config() == {"lr": 0.1, "rank": "0"}  # rank 0's config, rank 1's changes kept to itself
        scalars = {tag for tag, kind in tags.items() if kind == "scalar"}
        assert scalars == {"loss", "loss/rank0", "loss/rank1", "batch/rank0", "batch/rank1", "grad_norm/0"}
        # rank 0's series, and one per rank with all_ranks=True: every step exactly once, the values logged
        loss = reader.scalars("loss")
        assert loss.steps.tolist() == steps
        np.testing.assert_allclose(loss.values, seen[0]["losses"], rtol=1e-6)
        for rank in (0, 1):
            mine = reader.scalars(f"loss/rank{rank}")
            assert mine.steps.tolist() == steps
            np.testing.assert_allclose(mine.values, seen[rank]["losses"], rtol=1e-6)
            assert reader.scalars(f"batch/rank{rank}").values.tolist() == [1000.0 * rank + s for s in steps]
        assert seen[0]["losses"] != seen[1]["losses"]  # each rank trained on its own batches
        # watch() on the DDP model: rank 0 alone, its layers named without the wrapper, the gradients as the
        # optimizer applies them (averaged over the ranks by DDP)
        histograms = {tag for tag, kind in tags.items() if kind == "histogram"}
        assert histograms == {
            "weight/0.weight",
            "bias/0.bias",
            "gradient/0.weight",
            "gradient/0.bias",
            "activation/0",
        }
        gradients = reader.records("gradient/0.weight")
        assert [h.step for h in gradients] == steps
        np.testing.assert_allclose([h.norm for h in gradients], seen[0]["grad_norms"], rtol=1e-5)
        np.testing.assert_allclose(seen[0]["grad_norms"], seen[1]["grad_norms"], rtol=1e-6)


def test_torchrun_a_rank_killed_mid_run_leaves_the_run_interrupted_with_what_it_flushed(torchrun_job):
    store, out, done = torchrun_job
    assert done.returncode != 0
    flushed = json.loads((out / "killed" / "rank1.json").read_text())["losses"]
    assert len(flushed) == 3  # the worker's KILL_AFTER
    with store.reader("killed") as reader:
        assert reader.info()["status"] == "interrupted"
        assert reader.info()["ranks"].get("1") == "running"  # it never closed
        mine = reader.scalars("loss/rank1")
        assert mine.steps.tolist() == [0, 1, 2]
        np.testing.assert_allclose(mine.values, flushed, rtol=1e-6)
        # What rank 0 flushed before it stopped too: a prefix of its steps, possibly none (it may stop before its
        # first flush when rank 1 dies early).
        if "loss/rank0" in reader.tags():
            zero = reader.scalars("loss/rank0").steps.tolist()
            assert zero == list(range(len(zero)))
    assert _listed_status(store, "killed") == "interrupted"


def _listed_status(store: BackendStore, name: str) -> str:
    """The status ``list_runs`` gives the run ``name``."""
    listed = list_runs(store.url if store.url is not None else store.root)
    (status,) = [run.status for run in listed if run.name == store.at(name).get("name", name)]
    return status


# ---- ranks played in this process -------------------------------------------------------------------------------


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``job(rank)``: this process is now that rank of a job of two (as torchrun says it)."""
    for variable in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv("WORLD_SIZE", "2")

    def be(rank: int, port: str = "29999") -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("MASTER_PORT", port)

    return be


def _run(store: BackendStore, name: str, **options: Any) -> ds.Run:
    return ds.Run(**store.at(name), **options)


@pytest.mark.parametrize("first", [0, 1], ids=["rank0-closes-first", "rank1-closes-first"])
def test_the_run_is_finished_once_every_rank_that_opened_it_has_closed(store, job, first):
    job(0)
    zero = _run(store, "two", config={"lr": 0.1})
    job(1)
    one = _run(store, "two", config={"lr": 0.5})
    assert (zero.rank, one.rank, one.world_size) == (0, 1, 2)
    one.config["momentum"] = 0.9  # rank 1's own: not stored
    for step in range(3):
        zero.log({"loss": 1.0 + step}, step=step)
        one.log({"loss": 9.0}, step=step)  # not rank 0: nothing stored
        for rank, run in enumerate((zero, one)):
            run.log({"loss": 10.0 * rank + step}, step=step, all_ranks=True)
    ranks = [zero, one]
    ranks[first].close()
    assert store.status("two") == "running"  # the other rank still holds it
    assert _listed_status(store, "two") == "running"
    ranks[1 - first].close()
    with store.reader("two") as reader:
        assert reader.info()["status"] == "finished"
        assert reader.config() == {"lr": 0.1}
        assert set(reader.tags()) == {"loss", "loss/rank0", "loss/rank1"}
        assert reader.scalars("loss").values.tolist() == [1.0, 2.0, 3.0]
        assert reader.scalars("loss/rank1").values.tolist() == [10.0, 11.0, 12.0]
        assert reader.scalars("loss/rank1").steps.tolist() == [0, 1, 2]


def test_a_failed_rank_makes_the_run_failed(store, job):
    job(0)
    zero = _run(store, "failed")
    job(1)
    with pytest.raises(RuntimeError), _run(store, "failed"):
        raise RuntimeError("out of memory")
    assert store.status("failed") == "running"
    zero.close()
    with store.reader("failed") as reader:
        assert reader.info()["status"] == "failed"
        assert reader.info()["ranks"] == {"0": "finished", "1": "failed"}


def test_other_ranks_store_nothing_but_their_own_series(store, job, tmp_path):
    job(0)
    zero = _run(store, "quiet")
    job(1)
    one = _run(store, "quiet")
    model = nn.Linear(3, 2)
    watcher = one.watch(model, every=1)
    model(torch.randn(2, 3)).sum().backward()
    one.log_records([ds.track.Scalar("x", 1.0, 0)])
    one.log_series("y", [0, 1], [1.0, 2.0])
    one.note("from rank 1")
    assert one.checkpoint(model) == 0
    one.close()
    assert watcher.current_step == 0  # it counts steps, records nothing
    zero.close()
    with store.reader("quiet") as reader:
        assert reader.tags() == {}


def test_rank_0_cannot_log_into_another_ranks_series(store, job):
    job(0)
    with _run(store, "taken") as zero:
        with pytest.raises(BadInputError, match="rank 1's series"):
            zero.log({"loss/rank1": 1.0})
        zero.log({"loss/rank0": 1.0})  # its own: as all_ranks=True stores it


def test_a_run_made_by_rank_0_alone_is_finished_when_it_closes(store, job):
    job(0)
    with _run(store, "alone") as run:
        run.log({"loss": 1.0}, all_ranks=True)
    with store.reader("alone") as reader:
        assert reader.info()["status"] == "finished"
        assert list(reader.tags()) == ["loss/rank0"]


def test_a_rank_after_rank_0_closed_or_without_it_is_a_clear_error(store, job, monkeypatch):
    job(0)
    _run(store, "late").close()
    job(1)
    with pytest.raises(StoreError, match="rank 0 closed"):
        _run(store, "late")
    monkeypatch.setattr(writer, "JOIN_FOR", 0.3)
    with pytest.raises(StoreError, match=r"waited 0\.3 s for rank 0"):
        _run(store, "nobody")
    job(0, port="1234")  # a run of another job under the same name is not joined
    other = _run(store, "other")
    job(1)
    with pytest.raises(StoreError, match="waited"):
        _run(store, "other")
    other.close()


def test_distributed_false_or_one_process_keeps_a_run_of_its_own(store, job, monkeypatch):
    job(1)
    with _run(store, "own", distributed=False) as run:
        assert (run.rank, run.world_size) == (0, 1)
        run.log({"loss": 1.0}, all_ranks=True)  # outside a job: the tag as it is
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with _run(store, "single") as run:
        run.log({"loss": 1.0})
    for name in ("own", "single"):
        with store.reader(name) as reader:
            assert list(reader.tags()) == ["loss"] and reader.info()["status"] == "finished"
            assert "ranks" not in reader.info()


def test_bad_rank_variables_are_a_clear_error(job, monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(BadInputError, match="RANK='two'"):
        ds.Run(tmp_path / "r")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(BadInputError, match="not a rank of WORLD_SIZE=2"):
        ds.Run(tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_data_parallel_model_is_watched_and_kept_as_the_module_it_wraps(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    wrapped = nn.DataParallel(model)  # on a machine without GPUs it calls the module itself
    x = torch.randn(5, 3)
    for name, watched in (("plain", model), ("wrapped", wrapped)):
        with ds.Run(tmp_path / name) as run:
            run.watch(watched, every=1)
            watched(x).sum().backward()
            run.checkpoint(watched, step=0)
    with Reader(tmp_path / "plain") as plain, Reader(tmp_path / "wrapped") as unwrapped:
        assert unwrapped.tags() == plain.tags()
        assert "weight/0.weight" in plain.tags()
        for tag in ("weight/0.weight", "gradient/2.bias", "activation/1"):
            assert unwrapped.records(tag)[0].counts.tolist() == plain.records(tag)[0].counts.tolist()
        assert list(unwrapped.checkpoint(0)) == list(model.state_dict())
