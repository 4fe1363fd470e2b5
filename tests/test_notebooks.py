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
import os
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


def write_kernel(root: Path, *path: Path) -> Path:
    """A kernel spec under ``root`` for this interpreter with ``path`` first on its module path; returns ``root``."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deepscope tests",
        "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join(str(p) for p in path)},
    }
    (root / KERNEL).mkdir(parents=True)
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return root


@pytest.fixture
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec for this interpreter, with deepscope's source folder first on its path. Written for each test
    (a file): a module-scoped fixture would put the module in one xdist group (tests/conftest.py), and its three
    notebooks, a minute or more each, on one worker."""
    return write_kernel(tmp_path_factory.mktemp("kernels"), PACKAGE.parent)


def run_cells(nb: nbformat.NotebookNode, kernel_dir: Path, workdir: Path) -> nbformat.NotebookNode:
    """``nb`` run top to bottom in a fresh kernel of the spec in ``kernel_dir``, in ``workdir``."""
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=manager, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    finally:  # nbclient leaves a kernel it was handed running
        if manager.has_kernel:
            manager.shutdown_kernel()
    return nb


# Appended to each notebook: where the kernel's deepscope came from, and whether a board it started still serves.
PROBE = """
import json, socket, urllib.parse
import deepscope

serving = None
if "board" in globals():
    # behind a Jupyter proxy, board.url is the proxy's address and local_url the server's own
    address = urllib.parse.urlsplit(getattr(board, "local_url", None) or board.url)
    try:
        socket.create_connection((address.hostname, address.port), timeout=2).close()
        serving = True
    except OSError:
        serving = False
print(json.dumps({"deepscope": deepscope.__file__, "board_serving": serving}))
"""


def execute(name: str, kernel_dir: Path, workdir: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Notebook ``name`` run in a fresh kernel, and what the probe cell appended to it found."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    run_cells(nb, kernel_dir, workdir)
    return nb, json.loads(text_of(nb.cells.pop()))


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
def test_notebook_runs_and_shows_its_results(
    name: str, kernel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own default (inline), as users have it
    nb, probe = execute(name, kernel_dir, tmp_path)

    assert probe["deepscope"] == str(PACKAGE / "__init__.py"), "the kernel imported another deepscope"
    if tagged(nb, "expect-html"):
        assert probe["board_serving"] is False, "the board was left serving (or never started) at the end"
    assert tagged(nb, "expect-image"), f"{name} marks no cell that shows a picture"
    problems = [problem for cell in nb.cells if cell.cell_type == "code" for problem in shown_wrongly(cell)]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_checks_catch_a_text_fallback_a_missing_picture_and_a_missing_view(tmp_path: Path) -> None:
    """The same checks, in a kernel where ipywidgets cannot be imported (as for a user without it), on cells that
    show text where a picture and a view are expected: each is reported."""
    blocked = tmp_path / "blocked"
    (blocked / "ipywidgets").mkdir(parents=True)
    (blocked / "ipywidgets" / "__init__.py").write_text("raise ImportError('ipywidgets blocked by the test')\n")
    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(
        cells=[
            new(
                "from tqdm.auto import tqdm\n\nfor _ in tqdm(range(3)):\n    pass",
                metadata={"tags": ["expect-progress"]},
            ),
            new("'<Figure size 640x480 with 1 Axes>'", metadata={"tags": ["expect-image"]}),
            new("'<iframe>'", metadata={"tags": ["expect-html"]}),
        ]
    )
    run_cells(nb, write_kernel(tmp_path / "kernels", blocked, PACKAGE.parent), tmp_path)

    progress, picture, view = (shown_wrongly(cell) for cell in nb.cells)
    assert [p.split(":")[0] for p in progress] == ["no progress widget", "tqdm fell back to text"], progress
    assert [p.split(":")[0] for p in picture] == ["no picture"], picture
    assert [p.split(":")[0] for p in view] == ["no HTML view"], view


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
