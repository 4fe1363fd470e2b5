"""``import deepscope`` is light: the board, the store and the CLI's parser never load torch, and every public name
still resolves on first use. Each check runs in a fresh interpreter (this one has torch loaded already)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import deepscope as ds
from deepscope.track import ComparisonTable


def python(code: str) -> str:
    """Run ``code`` in a new interpreter; its stdout (the test fails with its stderr if it fails)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "import deepscope",
        "import deepscope.dashboard",
        "import deepscope.dashboard.server",
        "import deepscope.store, deepscope.store.catalog",
        "import deepscope.track.records",
        "from deepscope.cli import build_parser; build_parser().parse_args(['board', 'runs'])",
    ],
)
def test_the_board_side_does_not_import_torch(statement: str) -> None:
    assert python(f"{statement}\nimport sys\nprint('torch' in sys.modules)").strip() == "False"


def test_pyarrow_is_imported_only_to_read_or_write_parquet() -> None:
    code = """
    import sys
    import deepscope as ds
    import deepscope.dashboard.server, deepscope.store.parquet
    ds.explain_dataset, ds.Run, ds.embed
    print('pyarrow' in sys.modules)
    """
    assert python(code).strip() == "False"


def test_a_served_board_answers_without_importing_torch(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "a") as run:
        run.log_series("loss", np.arange(50), np.linspace(1, 0, 50))
        table = ComparisonTable(
            "compare", 0, ["deletion", "insertion"], "deletion", ["saliency"], np.ones((1, 2)), np.zeros((1, 2)), [None]
        )
        run.log_records([table])
    answers = python(
        f"""
        import json, sys
        from fastapi.testclient import TestClient
        from deepscope.dashboard.server import create_app

        client = TestClient(create_app({str(tmp_path)!r}), base_url="http://127.0.0.1")
        runs = client.get("/api/runs").json()
        scalars = client.get("/api/scalars/batch", params={{"tag": "loss", "max_points": 10}}).json()
        table = client.get("/api/method_comparison", params={{"run": "a", "tag": "compare"}}).json()
        shown = len(scalars["series"][0]["steps"])
        torch = "torch" in sys.modules
        print(json.dumps([[r["name"] for r in runs], 0 < shown <= 10, table["lower_is_better"], torch]))
        """
    )
    assert json.loads(answers) == [["a"], True, {"deletion": True, "insertion": False}, False]


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    found = json.loads(
        python(
            """
            import deepscope.explain, deepscope.embed  # submodules named like the functions: must not shadow them
            import importlib, json, types
            import deepscope as ds

            print(json.dumps({name: [getattr(ds, name).__module__ if not isinstance(getattr(ds, name), str) else None,
                                     isinstance(getattr(ds, name), types.ModuleType), name in dir(ds)]
                              for name in ds.__all__}))
            """
        )
    )
    assert set(found) == set(ds.__all__)
    assert not any(module for _, module, _ in found.values()), "a public name resolved to a module"
    assert all(listed for _, _, listed in found.values())
    assert found["explain"][0] == "deepscope.explain.base" and found["embed"][0] == "deepscope.embed.extract"
    assert found["Run"][0] == "deepscope.track.run"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'explian'"):
        ds.explian
