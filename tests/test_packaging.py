"""The package as PyPI would ship it: the wheel's contents and metadata, an install without extras that imports
and runs, the extras, and a README whose pictures and links work on the PyPI page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# The placeholder base URL (the repository is not public yet) lives in pyproject.toml only.
HOMEPAGE = PROJECT["urls"]["Homepage"]

SMOKE = textwrap.dedent(
    """
    import subprocess, sys, tempfile
    from pathlib import Path

    import torch
    from torch import nn

    import deepscope as ds
    from deepscope.store import Reader

    assert Path(ds.__file__).is_relative_to(sys.prefix), f"deepscope imported from {ds.__file__}, not the venv"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    images = torch.randn(2, 3, 8, 8)
    explanation = ds.explain(model, images, method="saliency")
    expected = images.detach().clone().requires_grad_(True)
    model(expected).max(1).values.sum().backward()
    torch.testing.assert_close(explanation.heatmap, expected.grad.abs().amax(1))
    with tempfile.TemporaryDirectory() as folder:
        with ds.Run(Path(folder) / "run") as run:
            run.log({"loss": 0.25}, step=3)
        with Reader(Path(folder) / "run") as reader:
            loss = reader.scalars("loss")
            assert loss.steps.tolist() == [3] and loss.values.tolist() == [0.25], (loss.steps, loss.values)
    for command in ([str(Path(sys.executable).with_name("deepscope")), "--help"],
                    [sys.executable, "-m", "deepscope", "--help"]):
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        assert out.startswith("usage: deepscope"), out
    print("smoke ok")
    """
)


def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``requirements`` (without extras) pull in, transitively, checked against
    their version specifiers."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = found.get(name) or metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is required but not installed in {sys.prefix}")
        assert requirement.specifier.contains(dist.version, prereleases=True), f"{requirement}: {dist.version}"
        for wanted in [""] * (name not in found) + sorted(requirement.extras):
            pending += [(Requirement(text), wanted) for text in dist.requires or []]
        found[name] = dist
    return found


def _site_view(dists: dict[str, metadata.Distribution], folder: Path) -> Path:
    """A site folder holding links to exactly ``dists``' files (their top-level packages and metadata)."""
    folder.mkdir()
    for dist in dists.values():
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not (folder / top).exists():
                (folder / top).symlink_to(Path(str(dist.locate_file(top))))
    return folder


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))).decode()


def _requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines, extras' included (they carry an ``extra == ...`` marker)."""
    return [
        line.removeprefix("Requires-Dist: ")
        for line in _metadata(wheel).splitlines()
        if line.startswith("Requires-Dist:")
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a copy of the files a build reads (README, LICENSE, pyproject.toml, src/)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    built = subprocess.run([*build, str(source)], capture_output=True, text=True, cwd=source)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("deepscope-*.whl")
    return path


def test_the_wheel_ships_the_license_the_dashboard_and_its_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    meta = _metadata(wheel)
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "END OF TERMS AND CONDITIONS" in license_text
    assert "License-Expression: Apache-2.0" in meta and "Classifier: License ::" not in meta
    assert "deepscope/__main__.py" in names and "deepscope/py.typed" in names
    static = {path.relative_to(ROOT / "src").as_posix() for path in (ROOT / "src/deepscope/dashboard/static").iterdir()}
    assert static and static <= set(names)
    # plotly.js's basic build, the board page's first, with its licence (the whole build comes with `plotly`)
    vendor = ROOT / "src/deepscope/dashboard/vendor"
    vendored = {path.relative_to(ROOT / "src").as_posix() for path in vendor.iterdir()}
    assert "deepscope/dashboard/vendor/plotly-basic.min.js" in vendored and vendored <= set(names)
    folders = (ROOT / "src/deepscope/dashboard").glob("views/*/*")
    views = {p.relative_to(ROOT / "src").as_posix() for p in folders if p.suffix in (".py", ".js")}
    assert any(name.endswith("/view.js") for name in views) and views <= set(names)  # every view's folder, whole
    for label in ("Homepage", "Documentation", "Issues", "Changelog"):
        assert f"Project-URL: {label}, {HOMEPAGE}" in meta
    assert "pip install deepscope" in meta  # the README is the long description


def test_the_wheel_installs_without_extras_and_runs(wheel, tmp_path):
    """A fresh venv gets the wheel without extras; its dependencies come from this environment, but only those the
    wheel declares (transitively), so an undeclared import fails the smoke script.

    Why not `pip install` them for real: torch and its CUDA libraries are about 5 GB to copy (minutes on 2 cores),
    and a test may not use the network. Why not the whole dev environment (a .pth to its site-packages, or
    --system-site-packages): every test dependency would be visible and hide a missing declaration.
    """
    dists = _closure(_requires(wheel))
    assert "torchvision" not in dists and "fastapi" not in dists  # optional extras stay out of a plain install
    view = _site_view(dists, tmp_path / "view")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # addsitedir (not a plain path line) so that the linked distributions' own .pth files are honoured.
    (site / "deepscope-test-deps.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, env=env
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    smoke = subprocess.run([python, "-c", SMOKE], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert smoke.returncode == 0 and "smoke ok" in smoke.stdout, smoke.stdout + smoke.stderr


def test_all_names_every_user_facing_extra():
    extras = PROJECT["optional-dependencies"]
    (everything,) = extras["all"]
    named = set(Requirement(everything).extras)
    assert canonicalize_name(Requirement(everything).name) == "deepscope"
    assert named == set(extras) - {"all", "bench", "test"}, "add the new extra to `all` (or to the excluded ones)"


def test_requirements_have_lower_bounds_only(wheel):
    """An upper cap or a pin makes pip downgrade what a user has (torch and its CUDA stack, say); add one only for a
    known incompatibility, and list it here with the reason."""
    requirements = [Requirement(text) for text in _requires(wheel)]
    assert {requirement.name for requirement in requirements} >= {"torch", "torchvision", "tensorboard"}
    for requirement in requirements:
        assert all(spec.operator in (">=", "!=") for spec in requirement.specifier), str(requirement)


def test_readme_pictures_and_links_work_on_pypi():
    """PyPI shows README.md without the repository: every picture and every link into the repository must be an
    absolute URL under the project's Homepage, to a file that exists."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r'<img[^>]+src="([^"]+)"', readme)
    pictures = [target for target in targets if re.search(r"\.(png|jpe?g|gif|svg|webp)$", target, re.I)]
    assert pictures, "README.md shows no pictures"
    for target in (target for target in targets if not target.startswith("#")):
        assert re.match(r"https?://", target), f"{target}: PyPI cannot resolve a relative link; use {HOMEPAGE}/..."
        if not target.startswith(HOMEPAGE + "/"):
            continue
        prefix = "raw/main/" if target in pictures else "blob/main/"
        relative = target.removeprefix(HOMEPAGE + "/")
        assert relative.startswith(prefix), f"{target}: expected {HOMEPAGE}/{prefix}..."
        path, _, anchor = relative.removeprefix(prefix).partition("#")
        assert (ROOT / path).is_file(), f"{target}: no such file in the repository"
        if anchor:  # GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.M)
            anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            assert anchor in anchors, f"{target}: {path} has no heading with the anchor #{anchor}"
    for picture in pictures:
        assert picture.startswith(f"{HOMEPAGE}/raw/main/docs/"), f"{picture}: pictures live under docs/"
    assert "pip install deepscope" in readme and 'pip install "deepscope[all]"' in readme
