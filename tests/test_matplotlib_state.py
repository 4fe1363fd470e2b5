"""deepscope never touches the user's matplotlib state, and every result shows itself in Jupyter.

A notebook's backend (``%matplotlib inline``) and pyplot belong to the user: building, drawing and displaying any
result must leave the backend chosen before it and must not import pyplot. The display check runs in a fresh
interpreter, so that this test process's matplotlib state proves nothing either way.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from deepscope.render import NotebookFigure, new_figure

SOURCE = Path(__file__).resolve().parents[1] / "src" / "deepscope"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# One worker takes the module, so the fresh interpreter that builds every result kind runs once.
pytestmark = pytest.mark.xdist_group("matplotlib_state")
MIXINS = {"FigureDisplay", "TableDisplay"}

# One builder per result kind that displays through render's mixin, each on a tiny model and tiny data; the key is
# the class name (so a new result kind without a case here fails test_every_displayed_result_has_a_builder).
# "compare" is ds.compare, which returns a figure, not a result.
BUILDERS = {
    "Explanation": "ds.explain(model, x, method='gradcam')",
    "MultiInputExplanation": "ds.explain(lambda a, b: model(a + b), (x[:2], x[:2]), method='saliency')",
    "compare": "ds.compare(model, x, methods=['saliency', 'gradcam'])",
    "ConfusionMatrix": "ds.evaluate_model(model, (x, labels), progress=False)",
    "BinaryReport": "ds.binary_report(labels % 2, torch.linspace(0, 1, len(labels)))",
    "OneVsRest": "ds.binary_report(labels, model(x).softmax(1).detach())",
    "SanityCheck": "ds.sanity_check(model, x[:2], methods=['saliency'])",
    "MethodComparison": "ds.compare_methods(model, x[:2], methods=['saliency'], steps=4, random=False, progress=False)",
    "Faithfulness": "ds.faithfulness(model, x[:2], ds.explain(model, x[:2], method='saliency'), steps=4)",
    "ConfidentlyWrong": "ds.confidently_wrong(model, (x, labels), k=2, method='saliency', progress=False)",
    "DatasetExplanation": "ds.explain_dataset(model, (x, labels), method='saliency', sample=2, progress=False, "
    "path=tempfile.mkdtemp() + '/explained.parquet')",
    "Filters": "ds.filters(model, 'conv1')",
    "Activations": "ds.activations(model, x, 'relu1', k=4)",
    "DeadUnits": "ds.dead_units(model, x, progress=False)",
    "TopPatches": "ds.top_patches(model, x, 'relu2', units=[0, 1], k=2, progress=False)",
    "PatchProjections": "ds.top_patches(model, x, 'relu2', units=0, k=2, progress=False).projections(model)",
    "Maximization": "ds.maximize(model, logit(0), steps=2, size=16, progress=False)",
    "Evolution": "evolution(run_dir, TinyCNN, 'conv1', what=['filters'], progress=False)",
    "Facets": "ds.multifaceted(model, x, 'relu2', 0, facets=2, k=6, steps=2, progress=False)",
    "Neighbors": "ds.neighbors(features, [0, 1], k=3)",
    "Projection": "ds.project(features, 'pca', quality=False)",
    "Projections": "ds.project(features, 'tsne', perplexity=[2, 3], quality=False, progress=False, n_iter=20)",
    "TokenView": "ds.explain(torch.nn.Sequential(torch.nn.Embedding(9, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2)),"
    " torch.tensor([[1, 2, 3]]), method='saliency', layer='0').text(['a', '<b>', 'c'])",
}

SCRIPT = """
import json, sys, tempfile
import matplotlib
matplotlib.use("svg")  # the user's choice, made before deepscope is imported
import torch
import deepscope as ds
from conftest import TinyCNN
from deepscope.features import evolution
from deepscope.features.objectives import logit
from deepscope.render import NotebookFigure

torch.manual_seed(0)
model = TinyCNN().eval()
x = torch.rand(12, 3, 16, 16)
labels = torch.arange(12) % 5
features = ds.embed(model, (x, labels), "gap", progress=False)
run_dir = tempfile.mkdtemp()
with ds.Run(run_dir) as run:
    for step in (0, 1):
        run.checkpoint(model, step=step)

report = {}
for name, build in json.loads(sys.argv[1]).items():
    result = eval(build)
    shown = result if isinstance(result, NotebookFigure) else result.figure()
    html = result._repr_html_() if hasattr(result, "_repr_html_") else None
    report[name] = {
        "kind": type(result).__name__,
        "figure": type(shown).__name__,
        "png": result._repr_png_()[:8].hex(),
        "html": html is None or html.startswith(("<table>", "<div")),
        "backend": matplotlib.get_backend(),
        "pyplot": "matplotlib.pyplot" in sys.modules,
    }
print(json.dumps(report))
"""


def _display_everything() -> dict[str, dict[str, object]]:
    tests = Path(__file__).parent
    environment = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    environment["PYTHONPATH"] = os.pathsep.join([str(SOURCE.parent), str(tests)])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), json.dumps(BUILDERS)],
        capture_output=True,
        text=True,
        timeout=900,  # one process builds every kind (t-SNE included): minutes on a loaded 2-core machine
        env=environment,
        cwd=tests,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def displayed() -> dict[str, dict[str, object]]:
    return _display_everything()


def _displayed_classes() -> set[str]:
    """Every class in src/ that inherits render's display mixin, directly or through another such class."""
    bases: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                names = {
                    b.id if isinstance(b, ast.Name) else b.attr
                    for b in node.bases
                    if isinstance(b, ast.Name | ast.Attribute)
                }
                bases.setdefault(node.name, set()).update(names)
    found = set(MIXINS)
    while True:
        more = {name for name, parents in bases.items() if parents & found} - found
        if not more:
            return found - MIXINS
        found |= more


def test_every_displayed_result_has_a_builder() -> None:
    classes = _displayed_classes()
    assert {"Explanation", "ConfusionMatrix", "MethodComparison", "TopPatches"} <= classes
    assert classes == set(BUILDERS) - {"compare"}, "add a builder for each result kind to BUILDERS"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_displaying_a_result_keeps_the_users_backend_and_shows_a_png(displayed, name: str) -> None:
    shown = displayed[name]
    assert shown["kind"] == ("NotebookFigure" if name == "compare" else name)
    assert shown["figure"] == "NotebookFigure"
    assert bytes.fromhex(str(shown["png"])) == PNG_SIGNATURE
    assert shown["html"]
    assert shown["backend"] == "svg", "deepscope switched the user's matplotlib backend"
    assert not shown["pyplot"], "deepscope imported matplotlib.pyplot"


def test_a_notebook_figure_is_a_matplotlib_figure_that_shows_as_png(tmp_path: Path) -> None:
    figure = new_figure(2.0, 1.5)
    figure.subplots().plot([0, 1], [1, 0])
    assert isinstance(figure, matplotlib.figure.Figure) and isinstance(figure, NotebookFigure)
    png = figure._repr_png_()
    assert png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (200, 150)  # 100 dpi
    figure.savefig(tmp_path / "plot.pdf")  # still a whole Figure: any format, any path
    assert (tmp_path / "plot.pdf").read_bytes().startswith(b"%PDF")


def test_ipython_shows_a_notebook_figure_without_pyplot() -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    # A fresh formatter, as in a kernel where pyplot was never imported: no printer registered for Figure.
    shown, _ = formatters.DisplayFormatter().format(new_figure(2.0, 1.5))
    plain, _ = formatters.DisplayFormatter().format(matplotlib.figure.Figure())
    assert "image/png" in shown and "image/png" not in plain


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, level) of every import in ``tree``, conditional ones (``if TYPE_CHECKING``) included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(f"{node.module or ''}.{alias.name}".strip("."), node.level) for alias in node.names]
    return found


def test_render_imports_nothing_else_of_deepscope() -> None:
    tree = ast.parse((SOURCE / "render.py").read_text())
    inner = [name for name, level in _imports(tree) if level > 0 or name.split(".")[0] == "deepscope"]
    assert not inner, f"render.py imports {inner}; it must stand alone"


def test_no_module_selects_a_backend_or_imports_pyplot() -> None:
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        pyplot = [name for name, level in _imports(tree) if level == 0 and name.startswith("matplotlib.pyplot")]
        uses = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("use", "switch_backend")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("matplotlib", "mpl", "plt", "pyplot")
        ]
        if pyplot or uses:
            offenders.append(f"{path.relative_to(SOURCE)}: pyplot {pyplot}, backend calls at lines {uses}")
    assert not offenders
