"""Tiny models and shared helpers for the tests."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from scheduling import pytest_collection_modifyitems  # noqa: F401  (this conftest's hook: the suite's scheduling)
from torch import nn

import deepscope as ds
from deepscope.dashboard.headless import CHROMIUM, CHROMIUM_ARGS
from deepscope.explain.base import method_class

# Each pytest-xdist worker gets its share of the cores (make test: 2 workers on 2 cores, one thread each): more
# threads than cores wait on each other at every parallel step, tens of times slower on small ops (torch's, openTSNE's,
# scikit-learn's OpenMP loops). OMP_NUM_THREADS reaches the OpenMP libraries loaded from now on, and the subprocesses
# tests start (notebook kernels, CLIs, Ray workers).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` (an ASGI app: the board's, or one that mounts it) served by uvicorn on a free loopback port in a
    thread, for the browser tests; yields ``http://127.0.0.1:PORT`` and stops the server on the way out."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not served.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the board did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        thread.join(timeout=5)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium (Debian's, through Playwright) for the browser tests; closed on the way out."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def watched_page(browser: Any, **context: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page in a fresh browser context (``context``: Playwright's options) and the list its console errors and
    uncaught exceptions land in, which a test asserts empty."""
    opened = browser.new_context(**context)
    page = opened.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        yield page, problems
    finally:
        opened.close()


# The registered methods that apply to any model, which the registry-wide tests run on tiny CNNs; a method that
# needs something of the model (attention rollout: attention) is tested on models that have it.
ANY_MODEL_METHODS = [m for m in ds.methods() if method_class(m).requires is None]

# Options that keep each method fast on tiny models; methods not listed run with their defaults.
FAST_OPTIONS: dict[str, dict] = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4, "seed": 0},
    "scorecam": {"batch_size": 32},
    "lime": {"samples": 40, "grid": 4, "seed": 0},
    "occlusion": {"window": 4, "stride": 4},
    "gradient_shap": {"samples": 4, "seed": 0},
    "kernel_shap": {"grid": 2, "samples": 20, "seed": 0},
    "shapley_sampling": {"grid": 2, "samples": 3, "seed": 0},
    "feature_ablation": {"grid": 4},
}


class TinyCNN(nn.Module):
    """conv-relu-conv-relu-maxpool-conv-relu-GAP-linear, with ReLU modules (optionally in-place)."""

    def __init__(self, classes: int = 5, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        x = self.relu3(self.conv3(x))
        return self.fc(self.gap(x).flatten(1))


class FunctionalCNN(TinyCNN):
    """The same network calling ReLU functionally (F.relu, torch.relu, Tensor.relu): no ReLU modules used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv2(F.relu(self.conv1(x)))))
        x = self.conv3(x).relu()
        return self.fc(self.gap(x).flatten(1))


def tiny_cnn(kind: str = "modules", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = FunctionalCNN() if kind == "functional" else TinyCNN(inplace=kind == "inplace")
    return model.eval()


_BUILT: dict[str, tuple[nn.Module, torch.Tensor]] = {}


def built_once(key: str, make: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``torch.manual_seed(seed); make()`` as if run now, built once per process under ``key``: a deep copy of the
    first build, with torch's global random state set as that build left it. For architectures whose random
    initialisation alone takes seconds (vgg11: 133 M weights) that many tests ask for; each test still gets a model
    of its own, so a test that changes its model (hooks, in-place ReLUs) changes nothing for the next."""
    if key not in _BUILT:
        torch.manual_seed(seed)
        model = make()
        _BUILT[key] = (model, torch.get_rng_state())
    model, state = _BUILT[key]
    torch.set_rng_state(state)
    return copy.deepcopy(model)


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16)


def explain_fast(model: nn.Module, x: torch.Tensor, method: str, **kwargs) -> ds.Explanation:
    options = {**FAST_OPTIONS.get(method, {}), **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method=method, **options)


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def minmax(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(t.shape[0], -1)
    low = flat.amin(dim=1).view(-1, *([1] * (t.ndim - 1)))
    high = flat.amax(dim=1).view(-1, *([1] * (t.ndim - 1)))
    return (t - low) / (high - low + 1e-12)


@pytest.fixture(scope="session")
def trained_fashion_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small FashionCNN trained for two epochs on 4000 real FashionMNIST images (accuracy > 0.7), and the first
    2000 test images as its inputs with their labels: the trained model the real-task tests share (trained once).

    The data come from Debian's dataset-fashion-mnist, offline; when it is missing the test fails, saying how to
    install it (make test installs it).
    """
    from deepscope.demo.data import INSTALL_COMMAND, DataUnavailableError, load_fashion_mnist, to_inputs

    try:
        data = load_fashion_mnist(offline=True, install=False, log=lambda message: None)
    except DataUnavailableError as error:
        pytest.fail(f"FashionMNIST is missing: run `{INSTALL_COMMAND}` (make test does). {error}", pytrace=False)
    model = fit_small_fashion_cnn(data)
    inputs, labels = to_inputs(data.test_images[:2000]), data.test_labels[:2000]
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.7, f"the test model did not learn FashionMNIST (accuracy {accuracy:.2f})"
    return model, inputs, labels


def fit_small_fashion_cnn(data: Any) -> nn.Module:
    """FashionCNN 8-16-32 trained for two epochs on 4,000 of ``data``'s training images (seeded): the trained model
    of the FashionMNIST tests, and of docs/measure_lrp_biases.py's table."""
    from deepscope.demo.cpu import cpu_threads
    from deepscope.demo.fashion import train
    from deepscope.demo.models import FashionCNN

    generator = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(data.train_images), generator=generator)[:4000]
    torch.manual_seed(0)
    model = FashionCNN(widths=(8, 16, 32))
    # Ops this small gain nothing from a second thread; on a busy machine two threads run many times slower.
    with cpu_threads(1, log=lambda message: None):
        train(
            model,
            data.train_images[subset],
            data.train_labels[subset],
            epochs=2,
            batch_size=64,
            lr=0.02,
            generator=generator,
            progress=False,
        )
    return model


def squares(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images 3x16x16 with a 4x4 square anywhere, bright in one channel; the class is the channel."""
    labels = torch.randint(0, 3, (n,), generator=generator)
    images = 0.3 * torch.rand(n, 3, 16, 16, generator=generator)
    corners = torch.randint(0, 13, (n, 2), generator=generator)
    for i, (label, (top, left)) in enumerate(zip(labels.tolist(), corners.tolist(), strict=True)):
        images[i, label, top : top + 4, left : left + 4] += 0.7
    return images, labels


@functools.cache
def _squares_training() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyCNN(classes=3)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        images, labels = squares(64, generator)
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return state, generator.get_state(), torch.get_rng_state()


def trained_on_squares() -> tuple[nn.Module, torch.Generator]:
    """TinyCNN trained (150 Adam steps, seeded) to tell which channel holds the square, in eval mode, and the
    generator to draw further :func:`squares` from.

    Trained once per process (tests/test_sanity.py and tests/test_trust_compare.py share the xdist group
    ``squares`` for it): each call gets a model of its own with the trained weights, and the generator and torch's
    global random state as the training left them, as if it had trained now."""
    state, generator_state, rng = _squares_training()
    model = TinyCNN(classes=3)
    model.load_state_dict(state)
    generator = torch.Generator()
    generator.set_state(generator_state)
    torch.set_rng_state(rng)
    return model.eval(), generator


# The store on each backend (tests/test_store_backends.py, tests/test_distributed_run.py) ---------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/pg_cluster.py) for a module's tests, each using runs of its own names;
    skips, saying why, where none can be started (``make postgres`` installs one)."""
    import pg_cluster

    why = pg_cluster.missing()
    if why is not None:
        pytest.skip(why)
    with pg_cluster.cluster() as url:
        yield url


class BackendStore:
    """Where a test's runs go, a run directory (SQLite) or a named run in PostgreSQL: ``at(name)`` gives ``Run``'s
    and ``Reader``'s location arguments."""

    def __init__(self, kind: str, root: Path, url: str | None) -> None:
        self.kind, self.root, self.url = kind, root, url

    def at(self, name: str) -> dict[str, Any]:
        if self.url is None:
            return {"path": self.root / name}
        return {"path": self.url, "name": f"{self.root.name}/{name}"}

    def run(self, name: str, **options: Any) -> ds.Run:
        return ds.Run(**self.at(name), **options)

    def reader(self, name: str) -> ds.store.Reader:
        where = self.at(name)
        return ds.store.Reader(where["path"], where.get("name"))

    def status(self, name: str) -> str:
        with self.reader(name) as reader:
            return str(reader.info()["status"])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BackendStore:
    """Each backend in turn (a module may define its own ``store``, which wins there)."""
    url = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    return BackendStore(request.param, tmp_path, url)


# Ray (tests/test_ray.py, tests/test_explain_dataset_ray.py, docs/scale.md's blocks) -----------------------------


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray (2 CPUs) for every Ray test of this worker: starting one costs 5-10 s on this machine, and Ray
    Data's first use in a session as much again. As a session fixture of this conftest it keeps its users on one
    xdist worker (:func:`_shared_fixture_group`). The actor pool left warm by one test serves the next when the model
    and options match, as across a user's calls; it is closed with the session."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from deepscope.engine import close_pools

    temp = tempfile.mkdtemp(prefix="dsray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # The actors import this checkout's deepscope, wherever the tests run from.
    env = {"env_vars": {"PYTHONPATH": str(Path(ds.__file__).resolve().parents[1])}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp, runtime_env=env)
    shutdown = ray.shutdown  # Ray's own: docs/scale.md's fixture puts one that keeps this session in its place
    try:
        yield
    finally:
        close_pools()
        shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_module(ray_session: None) -> Iterator[None]:
    """The Ray session for one module, which starts and ends with no warm actor pool: a pool one module left holding
    every CPU (two actors of one CPU on 2) starves the next module's Ray Data tasks (``ray.data.from_arrow`` reads
    its blocks' metadata in a task), which then wait for ever. Within a module, tests share their pool."""
    from deepscope.engine import close_pools

    close_pools()
    try:
        yield
    finally:
        close_pools()
