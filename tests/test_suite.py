"""The suite's own scheduling (tests/scheduling.py, the hook of tests/conftest.py): the slow list names real tests,
and xdist groups hold on the pytest in use (pytest 9.2 moved node ids where xdist 3.8 does not write its groups)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scheduling import SLOW

TESTS = Path(__file__).parent


@pytest.mark.parametrize("prefix", SLOW)
def test_each_slow_prefix_names_tests_that_exist(prefix: str) -> None:
    path, _, rest = prefix.partition("::")
    file = TESTS.parent / path
    if rest:
        assert file.is_file(), f"SLOW names {path}, which is gone"
        assert rest.split("[")[0] in file.read_text(), f"SLOW names {prefix}: no such test any more"
    else:
        assert list(file.parent.glob(file.name + "*")), f"SLOW names {path}, which matches no test file"


def test_grouped_tests_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(  # the suite's hook, loaded under another module name
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_scheduling', {str(TESTS / 'scheduling.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "pytest_collection_modifyitems = module.pytest_collection_modifyitems\n"
    )
    (tmp_path / "test_groups.py").write_text(
        "import os, pytest\n"
        "@pytest.fixture(scope='module')\n"
        "def shared():\n"
        "    return os.environ['PYTEST_XDIST_WORKER']\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_module_fixture(shared, i):\n"
        "    print('shared', shared, os.environ['PYTEST_XDIST_WORKER'])\n"
        "@pytest.mark.xdist_group('named')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_named(i):\n"
        "    print('named', os.environ['PYTEST_XDIST_WORKER'])\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_free(i):\n"
        "    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "-s"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for group in ("@named", "@test_groups.py"):
        workers = {line.split("]")[0] for line in lines if line.startswith("[gw") and line.rstrip().endswith(group)}
        assert len(workers) == 1, f"the tests of group {group} ran on {workers or 'no worker'}:\n{done.stdout}"
