"""The example notebooks of docs/notebooks/, executed in a real Jupyter kernel (nbclient): what users see.

Each notebook must run without an error; the cells tagged ``expect-image`` must show a picture (image/png, not a
``<Figure size ...>`` line), ``expect-html`` an HTML view, ``expect-progress`` a tqdm bar drawn as a widget; and no
cell may print tqdm's "IProgress not found" warning (its text fallback when ipywidgets is missing).

The kernel is this interpreter (a kernel spec written for the test, not whatever ``python3`` spec the machine has)
importing the same deepscope as the tests, and runs in a temporary folder so the notebooks' ``runs/`` land there.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import deepscope

NOTEBOOKS = Path(__file__).parents[1] / "docs" / "notebooks"
KERNEL = "deepscope-test"
CELL_TIMEOUT = 300
PACKAGE = Path(deepscope.__file__).parent
WIDGET = "application/vnd.jupyter.widget-view+json"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = sorted(_generator().NOTEBOOKS)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec for this interpreter, with deepscope's source folder first on its path."""
    root = tmp_path_factory.mktemp("kernels")
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deepscope tests",
        "language": "python",
        "env": {"PYTHONPATH": str(PACKAGE.parent)},
    }
    (root / KERNEL).mkdir()
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return root


def execute(name: str, kernel_dir: Path, workdir: Path) -> nbformat.NotebookNode:
    """Notebook ``name`` run top to bottom in a fresh kernel, plus one cell printing where deepscope came from."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import deepscope\nprint(deepscope.__file__)"))
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=manager, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]


def mime_types(cell: nbformat.NotebookNode) -> set[str]:
    return {mime for output in cell.outputs for mime in output.get("data", {})}


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_its_results(
    name: str, kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own default (inline), as users have it
    nb = execute(name, kernel_dir, tmp_path)

    assert text_of(nb.cells[-1]).strip() == str(PACKAGE / "__init__.py"), "the kernel imported another deepscope"
    assert tagged(nb, "expect-image"), f"{name} marks no cell that shows a picture"
    problems = [problem for cell in nb.cells if cell.cell_type == "code" for problem in shown_wrongly(cell)]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def shown_wrongly(cell: nbformat.NotebookNode) -> list[str]:
    """What is wrong with what ``cell`` showed, against its tags (one line each)."""
    tags, mimes, text = cell.metadata.get("tags", []), mime_types(cell), text_of(cell)
    shown = f"{cell.source.splitlines()[-1]!r} showed {sorted(mimes)} {text[:200]!r}"
    problems = []
    if "expect-image" in tags and "image/png" not in mimes:
        problems.append(f"no picture: {shown}")
    if "expect-html" in tags and "text/html" not in mimes:
        problems.append(f"no HTML view: {shown}")
    if "expect-progress" in tags and WIDGET not in mimes:
        problems.append(f"no progress widget: {shown}")
    if "IProgress not found" in text or "TqdmWarning" in text:
        problems.append(f"tqdm fell back to text: {shown}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_as_generated_without_outputs(name: str) -> None:
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    generated = _generator().build(name)
    assert [(c.cell_type, c.source, c.metadata) for c in committed.cells] == [
        (c.cell_type, c.source, c.metadata) for c in generated.cells
    ], f"docs/notebooks/{name} differs from make_notebooks.py: run it"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name} was committed with outputs"
