"""Scheduling of the suite on pytest-xdist workers (make test: -n 2 --dist loadgroup): which tests share a worker,
which are marked slow, in what order they are dealt. The hook is tests/conftest.py's; it lives here, importing
nothing heavier than pytest, so that tests/test_suite.py can run it in a pytest of its own without importing torch
in three fresh interpreters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Fixtures of pytest and its plugins that last the session but cost nothing to build: no reason to group their users.
_FREE_SHARED_FIXTURES = {"tmp_path_factory", "worker_id", "testrun_uid", "_session_faker", "anyio_backend"}


def _shared_fixture_group(item: pytest.Item) -> str | None:
    """The xdist group that keeps an expensive shared fixture built once: a module's own module-scoped fixtures
    (a board server, a trained model, a PostgreSQL server) keep the module on one worker; a session fixture of
    tests/conftest.py (the trained FashionMNIST model) keeps every module that uses it on one worker. ``None``: the test
    shares nothing costly and goes wherever a worker is free."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    module = item.nodeid.split("::")[0]
    group = None
    for name in item.fixturenames:
        definitions = info.name2fixturedefs.get(name)
        if not definitions or name in _FREE_SHARED_FIXTURES:
            continue
        scope = definitions[-1].scope
        if scope == "session" and definitions[-1].baseid.startswith("tests"):
            return f"session-{name}"
        if scope in {"module", "package", "class"} or name == "store":  # store: a PostgreSQL server per module
            group = module
    return group


# The tests that are slow by nature (a fresh interpreter, Ray, Chromium, a PostgreSQL server, a real architecture, a
# training run, a notebook kernel), by node id prefix: marked `slow`, so a dev loop can run `pytest -m "not slow"`
# (make test-fast); `make test` and CI run everything.
SLOW = (
    "tests/test_explain_dataset_ray.py",  # a local Ray and its actors
    "tests/test_ray.py",
    "tests/test_docs.py::test_block_runs[docs/scale.md",
    "tests/test_matplotlib_state.py::test_displaying_a_result",  # one interpreter builds every result kind
    "tests/test_cli.py::test_demo_",  # the FashionMNIST demo, end to end
    "tests/test_demo_gradients.py::test_demo_gradients_command",
    "tests/test_notebooks.py::test_notebook_runs",  # a Jupyter kernel
    "tests/test_packaging.py::test_the_wheel",  # builds and installs the wheel
    "tests/test_distributed_run.py::test_torchrun",
    "tests/test_board_browser",  # Chromium
    "tests/test_board_postgres.py",  # PostgreSQL
    "tests/test_lrp_transformers.py::test_vit_b_16",  # torchvision's ViT-B/16 at 224 px
    "tests/test_embed.py::test_umap_runs",  # numba compiles UMAP
    "tests/test_embed.py::test_embed_resnet18_layer",
    "tests/test_tsne.py::test_openTSNE_optimises_with_the_gradient",
    "tests/test_tsne.py::test_final_kl_divergence",
    "tests/test_trust_fashion.py",  # trains the FashionMNIST model
    "tests/test_maximize_fashion.py",
    "tests/test_suite.py::test_grouped_tests_run_on_one_worker",  # a pytest with two workers
    "tests/test_interrupt.py::test_ctrl_c_during_the_demo",  # the FashionMNIST demo in a subprocess
)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Each test that shares an expensive fixture is put in that fixture's xdist group (see
    :func:`_shared_fixture_group`) unless it names its group itself: without it, --dist loadgroup deals a module's
    tests to both workers and each builds the fixture. The workers stay balanced: groups are dealt first, largest
    first, and the ungrouped tests fill in after.

    After the other hooks (xdist's among them), the group xdist wrote into each grouped test's legacy ``_nodeid``
    is put into its node id, where xdist's scheduler reads it: pytest 9.2 keeps node ids in ``_id``, so xdist 3.8
    silently stopped grouping (pytest-dev/pytest-xdist#1386): a docs page's blocks went to both workers, and each
    ran the page's earlier blocks again.
    """
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("xdist_group") is None:
            group = _shared_fixture_group(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    legacy = [item for item in items if "@" in str(getattr(item, "_nodeid", "")) and "@" not in item.nodeid]
    if legacy:
        from _pytest.nodeid import NodeId  # pytest >= 9.2 only, where legacy ids are found

        for item in legacy:
            item._id = NodeId.parse(item._nodeid)  # type: ignore[attr-defined]
    items[:] = sorted(items, key=_slow_alone_first)
    return result


def _slow_alone_first(item: pytest.Item) -> int:
    """The order of the tests: a slow test of no xdist group before the other tests of no group, each group's tests
    in their own order. xdist deals the groups first (largest first), then the ungrouped tests in this order: a
    slow one dealt last (the two-node Ray cluster, a minute or two) ran alone at the end while the other worker
    idled."""
    return 0 if item.get_closest_marker("slow") and not item.get_closest_marker("xdist_group") else 1
