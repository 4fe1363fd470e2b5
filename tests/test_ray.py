"""The data-set calls on Ray (deepscope.engine, deepscope.ray_engine): the same answers as in this process.

conftest's local Ray (2 CPUs, one session per xdist worker, shared with tests/test_explain_dataset_ray.py and
docs/scale.md's blocks) serves the module; the loopback cluster test starts its own head and worker node (``ray start
--block``, ended by their process ids) and drives them from a second interpreter. Ray starts slowly on a busy
machine: the data are tiny (64 FashionMNIST-sized images, the demo's small CNN) and the timeouts generous.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import deepscope as ds
from deepscope import ray_engine
from deepscope.demo.models import FashionCNN
from deepscope.engine import RayOptions

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# Two actors of half a CPU each leave a CPU to Ray Data's own tasks (numbering a data set's rows) on 2 CPUs.
OPTIONS = RayOptions(actors=2, cpus_per_actor=0.5)
# One actor where a test is about one pool's life, not about merging what several send: each actor is a process
# importing torch, and two starting at once take twice as long on 2 busy cores.
ONE_ACTOR = RayOptions(actors=1, cpus_per_actor=0.5)


@pytest.fixture(scope="module")
def local_ray(ray_module: None) -> None:
    """conftest's Ray session (2 CPUs, one per xdist worker), which ships this file's classes (the fragile model)
    by value: the actors cannot import the test module."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """One model for the module's tests that leave it as it is: the actor pool a test leaves warm with OPTIONS
    serves the next one, as it serves a user's calls (a pool's start is an actor process importing torch)."""
    return _model()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return FashionCNN().eval()


def _data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(64, 1, 28, 28, generator=generator)
    images[3] *= 4  # a bright input, in many units' top k
    images[40] = images[3]  # and its copy: equal activations, a tie that both engines break by the earlier index
    return images, torch.randint(0, 10, (64,), generator=generator)


def _ray_dataset(images: Tensor, labels: Tensor) -> object:
    """A Ray data set as a user builds one: image and label columns, several blocks, no ids."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    tables = [
        pa.table(
            {"image": ArrowTensorArray.from_numpy(images[i : i + 16].numpy()), "label": labels[i : i + 16].numpy()}
        )
        for i in range(0, len(images), 16)
    ]
    return ray.data.from_arrow(tables)


def test_embed_on_a_ray_dataset_equals_the_local_call(local_ray: None, model: nn.Module) -> None:
    images, labels = _data()
    local = ds.embed(model, (images, labels), "features", batch_size=16)
    remote = ds.embed(model, _ray_dataset(images, labels), "features", batch_size=16, ray=OPTIONS)
    assert type(remote) is type(local)
    torch.testing.assert_close(remote.features, local.features)
    assert torch.equal(remote.labels, local.labels) and torch.equal(remote.predictions, local.predictions)
    assert np.array_equal(remote.thumbnails, local.thumbnails)


def test_top_patches_and_dead_units_on_ray_equal_the_local_calls(local_ray: None, model: nn.Module) -> None:
    images, _labels = _data()
    # Batches of 2: in-memory data goes in blocks of several batches (4, 3, 3, 2, ...), each combined on its actor.
    local = ds.top_patches(model, images, "features.conv1", k=5, batch_size=2)
    remote = ds.top_patches(model, images, "features.conv1", k=5, batch_size=2, engine="ray", ray=OPTIONS)
    assert type(remote) is type(local)
    for name in ("units", "values", "indices", "positions", "boxes"):
        assert torch.equal(getattr(remote, name), getattr(local, name)), name
    assert remote.images.keys() == local.images.keys()
    assert all(torch.equal(remote.images[i], local.images[i]) for i in local.images)
    ties = [row.tolist() for row in local.indices if 3 in row and 40 in row]
    assert ties and all(row.index(3) + 1 == row.index(40) for row in ties)  # the tie is reached, the earlier first

    dead_local = ds.dead_units(model, images, batch_size=16)
    pool = ray_engine._warm
    # The default pool size on CPUs is OPTIONS' 2: the same pool serves (once a second one started for nothing).
    dead_remote = ds.dead_units(model, images, batch_size=16, engine="ray", ray=RayOptions(cpus_per_actor=0.5))
    assert ray_engine._warm is pool
    assert dead_remote.images == dead_local.images == 64
    assert dead_remote.peak.keys() == dead_local.peak.keys()
    assert all(torch.equal(dead_remote.peak[key], dead_local.peak[key]) for key in dead_local.peak)


def test_confusion_and_confidently_wrong_on_ray_equal_the_local_calls(local_ray: None, model: nn.Module) -> None:
    data = _data()
    local = ds.evaluate_model(model, data, batch_size=16)
    remote = ds.evaluate_model(model, data, batch_size=16, engine="ray", ray=OPTIONS)
    assert type(remote) is type(local)
    assert torch.equal(remote.counts, local.counts) and int(local.counts.sum()) == 64
    assert torch.equal(remote.labels, local.labels)
    torch.testing.assert_close(remote.scores, local.scores)

    wrong_local = ds.confidently_wrong(model, data, k=6, method="saliency", batch_size=16)
    wrong_remote = ds.confidently_wrong(model, data, k=6, method="saliency", batch_size=16, engine="ray", ray=OPTIONS)
    assert (wrong_remote.wrong, wrong_remote.total) == (wrong_local.wrong, wrong_local.total)
    assert torch.equal(wrong_remote.indices, wrong_local.indices)
    assert torch.equal(wrong_remote.confidence, wrong_local.confidence)
    torch.testing.assert_close(wrong_remote.explanation.heatmap, wrong_local.explanation.heatmap)


def _within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s answer, or a failure (not a blocked test run) when it has not returned within ``seconds``."""
    answer: list[object] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            answer.append(call())
        except BaseException as error:  # handed to the test's thread
            raised.append(error)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"no answer within {seconds} s: the call waits for ever"
    if raised:
        raise raised[0]
    return answer[0]


def test_actors_holding_every_cpu_and_no_id_column_do_not_wait_for_ever(local_ray: None, model: nn.Module) -> None:
    images, labels = _data()
    # With a CPU left for its tasks (OPTIONS: the pool holds one of 2), a lazy data set streams through the pool: its
    # rows numbered as it gives them.
    lazy = ray.data.range(64).map_batches(lambda batch: {"image": np.zeros((len(batch["id"]), 1, 28, 28), "f4")})
    features = _within(180, lambda: ds.embed(model, lazy, "features", ray=OPTIONS))
    assert isinstance(features, ds.Features) and len(features) == 64
    torch.testing.assert_close(features.features, ds.embed(model, torch.zeros(64, 1, 28, 28), "features").features)
    # An actor of both CPUs (one process: a second one would only add its start): nothing else can run.
    every_cpu = RayOptions(actors=1, cpus_per_actor=2)
    # A data set that computes its blocks in tasks would wait for CPUs the pool holds: said, not waited on.
    with pytest.raises(ds.BadInputError, match="materialize"):
        _within(180, lambda: ds.embed(model, lazy, "features", ray=every_cpu))
    # Rows without ids are numbered from the blocks' row counts in the driver (once an all-to-all step that waited
    # for the CPUs the actors held).
    local = ds.top_patches(model, images, "features.conv1", k=5, batch_size=16)
    remote = _within(
        180,
        lambda: ds.top_patches(
            model, _ray_dataset(images, labels), "features.conv1", k=5, batch_size=16, ray=every_cpu
        ),
    )
    assert isinstance(remote, type(local))
    assert torch.equal(remote.indices, local.indices) and torch.equal(remote.values, local.values)
    assert remote.images.keys() == local.images.keys()  # read again by id from the blocks that hold them
    assert all(torch.equal(remote.images[i], local.images[i]) for i in local.images)


def test_the_actor_pool_stays_warm_for_the_same_model_and_restarts_for_changed_weights(local_ray: None) -> None:
    from deepscope.engine import close_pools

    model, (images, labels) = _model(), _data()
    first = ds.embed(model, (images, labels), "features", batch_size=16, engine="ray", ray=ONE_ACTOR)
    pool = ray_engine._warm
    assert pool is not None and len(pool.actors) == 1
    ds.dead_units(model, images, batch_size=16, engine="ray", ray=ONE_ACTOR)
    assert ray_engine._warm is pool  # the same actor served the second call
    with torch.no_grad():
        model.fc.weight.neg_()  # an in-place change, as an optimizer's step makes
    second = ds.embed(model, (images, labels), "features", batch_size=16, engine="ray", ray=ONE_ACTOR)
    assert ray_engine._warm is not pool and not pool.actors  # the stale pool was closed, a new one started
    assert torch.equal(second.predictions, ds.embed(model, (images, labels), "features").predictions)
    assert not torch.equal(second.predictions, first.predictions)  # the new weights answered
    torch.testing.assert_close(second.features, first.features)  # features come before fc
    close_pools()
    assert ray_engine._warm is None


class Fragile(nn.Module):
    """A model whose first forward pass on an actor kills that actor's process (once: a file marks it done)."""

    def __init__(self, model: nn.Module, flag: str) -> None:
        super().__init__()
        self.model = model
        self.flag = flag

    def forward(self, x: Tensor) -> Tensor:
        if not os.path.exists(self.flag):
            Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.model(x)


def test_a_killed_actor_is_restarted_and_its_batches_redone(local_ray: None, tmp_path: Path) -> None:
    model, (images, labels) = _model(), _data()
    flag = tmp_path / "killed"
    local = ds.embed(model, (images, labels), "features", batch_size=8)
    remote = ds.embed(
        Fragile(model, str(flag)), (images, labels), "model.features", batch_size=8, engine="ray", ray=ONE_ACTOR
    )
    assert flag.exists()  # the actor did die
    assert len(remote) == 64 and torch.equal(remote.labels, labels)  # every item once, in order
    torch.testing.assert_close(remote.features, local.features)


def test_without_ray_the_calls_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ds.BadInputError, match=r"deepscope\[ray\]"):
        ds.embed(_model(), _data()[0], "features", engine="ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.ray_cluster
def test_top_patches_on_a_loopback_cluster_of_two_nodes(tmp_path: Path) -> None:
    """A head and a worker node (`ray start`), a driver in its own interpreter with `ray.init(address=...)`. The
    driver starts with the head (it imports torch meanwhile, then waits for the head's port), the worker node as soon
    as the head listens."""
    port = _free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(ds.__file__).resolve().parents[1])}
    temp = tempfile.mkdtemp(prefix="dsray", dir="/tmp")
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    driver = textwrap.dedent(f"""
        import socket, time, ray, torch, deepscope as ds
        from deepscope.demo.models import FashionCNN
        from deepscope.engine import RayOptions
        torch.manual_seed(0)
        model = FashionCNN().eval()
        images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        local = ds.top_patches(model, images, "features.conv2", k=4, batch_size=16)
        for _ in range(240):  # the head listens
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        ray.init(address="127.0.0.1:{port}", log_to_driver=False)
        for _ in range(240):  # the worker node joins
            if sum(node["Alive"] for node in ray.nodes()) == 2:
                break
            time.sleep(0.5)
        assert sum(node["Alive"] for node in ray.nodes()) == 2, ray.nodes()
        # An actor of the node's one CPU on each node.
        remote = ds.top_patches(model, images, "features.conv2", k=4, batch_size=16, engine="ray",
                                ray=RayOptions(actors=2, cpus_per_actor=1))
        assert torch.equal(local.values, remote.values) and torch.equal(local.indices, remote.indices)
        print("same answer on", len(ray.nodes()), "nodes")
    """)

    def node(*options: str) -> subprocess.Popen:
        return subprocess.Popen(
            [ray_cli, "start", *options, *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    head = node("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}")
    nodes = [head]
    client = subprocess.Popen(
        [sys.executable, "-c", driver], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert head.poll() is None, "the head node's `ray start` ended"
            assert time.monotonic() < deadline, "the head node did not listen within 120 s"
            time.sleep(0.2)
        nodes.append(node(f"--address=127.0.0.1:{port}"))
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err[-3000:]
        assert "same answer on 2 nodes" in out
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for started in reversed(nodes):  # `ray start --block` stops the processes it started when it is ended
            started.send_signal(signal.SIGTERM)
        for started in reversed(nodes):
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
