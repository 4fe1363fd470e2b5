"""Every Python block of README.md and docs/*.md runs, so a changed signature fails here, not in a user's hands.

The blocks of a page run in order in one namespace (they build on each other) after the page's fixture,
``tests/docs_fixtures/<page>.py``, has defined the names they assume (a tiny model, a few images, a loader).
How to write a runnable block and a fixture: docs/contributing.md. The machinery: tests/docs_blocks.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from docs_blocks import Block, DocsBlockError, PageRun, blocks, compile_block, fixture_path, pages

# The blocks that cannot run in the test suite, by page and first line of code, and why. Nothing else is left out,
# and test_not_run_is_exact keeps this list in step with the pages.
NOT_RUN: dict[tuple[str, str], str] = {}

BLOCKS = [block for page in pages() for block in blocks(page)]

# Pages whose blocks run in a session fixture of tests/conftest.py, shared with other tests on the worker that holds
# it: docs/scale.md's blocks in the Ray session of tests/test_ray.py (a Ray start is 5-10 s; its fixture,
# tests/docs_fixtures/scale.py, lets the page's ray.init and ray.shutdown find it).
PAGE_FIXTURES = {"docs/scale.md": "ray_module"}
# Their xdist group: tests/scheduling.py's ``_shared_fixture_group`` gives the other tests of the session fixture
# underneath (ray_module is a module's share of ray_session).
PAGE_GROUPS = {"docs/scale.md": "session-ray_session"}


@pytest.fixture(scope="session")
def page_runs() -> Iterator[dict[str, PageRun]]:
    runs: dict[str, PageRun] = {}
    yield runs
    for run in runs.values():
        run.close()


def _page_run(block: Block, runs: dict[str, PageRun], factory: pytest.TempPathFactory) -> PageRun:
    run = runs.get(block.page)
    if run is None:
        run = runs[block.page] = PageRun(block.page, factory.mktemp(block.page.replace("/", "-")))
        run.start()
    if run.failed:
        raise DocsBlockError(f"{block.id} was not run: {run.failed} before it failed; fix that one")
    return run


def _group(page: str) -> str:
    """The xdist group of a page's blocks: the page's, or the group of the session fixture they use (conftest's
    ``_shared_fixture_group`` names it so for the other tests that use it)."""
    return PAGE_GROUPS.get(page, page)


# Blocks of one page share a namespace: `make test` (pytest -n 2 --dist loadgroup) keeps each page on one worker.
@pytest.mark.parametrize(
    "block", [pytest.param(b, id=b.id, marks=pytest.mark.xdist_group(_group(b.page))) for b in BLOCKS]
)
def test_block_runs(
    block: Block,
    page_runs: dict[str, PageRun],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    reason = NOT_RUN.get((block.page, block.first_line))
    failure = ""
    try:
        compile_block(block)  # even a block that cannot run must be valid Python with a valid marker
        if reason:
            pytest.skip(f"{block.id} is not run: {reason}")
        if block.page in PAGE_FIXTURES:
            request.getfixturevalue(PAGE_FIXTURES[block.page])
        run = _page_run(block, page_runs, tmp_path_factory)
        page = [b for b in BLOCKS if b.page == block.page]
        # A block selected alone (pytest -k) first runs the blocks of its page before it.
        for earlier in page[run.done : page.index(block)]:
            if (earlier.page, earlier.first_line) not in NOT_RUN:
                run.run(earlier)
            else:
                run.done += 1
        run.run(block)
    except DocsBlockError as error:
        failure = str(error)
    if failure:  # outside the except clause: the message alone, not chained to the exception it reports
        pytest.fail(failure, pytrace=False)


def test_not_run_is_exact() -> None:
    present = {(b.page, b.first_line) for b in BLOCKS}
    stale = [f"{page}: {line!r}" for page, line in NOT_RUN if (page, line) not in present]
    assert not stale, f"NOT_RUN names blocks that are not in the docs any more: {stale}"


def test_every_fixture_has_its_page() -> None:
    stems = {fixture_path(b.page).name for b in BLOCKS}
    orphans = sorted(p.name for p in fixture_path("x.md").parent.glob("*.py") if p.name not in stems)
    assert not orphans, f"fixtures of pages that have no Python block (any more): {orphans}"


# The machinery itself, on pages written here ---------------------------------------------------------------------


def _page(root: Path, text: str, name: str = "README.md") -> list[Block]:
    (root / "docs").mkdir(exist_ok=True)
    (root / name).write_text(text)
    return blocks(root / name, root)


def test_blocks_are_found_with_their_page_line_and_marker(tmp_path: Path) -> None:
    found = _page(
        tmp_path,
        "# Title\n\n```python\nx = 1\n```\n\n```console\n$ ls\n```\n"
        "<!-- docs-test: f(n=2) -->\n```python\ny = f(n=100)\n```\n",
    )
    assert [(b.id, b.code, b.marker) for b in found] == [
        ("README.md:4", "x = 1\n", ""),
        ("README.md:12", "y = f(n=100)\n", "f(n=2)"),
    ]


def test_a_failing_block_says_page_line_source_and_error(tmp_path: Path) -> None:
    first, second, third = _page(
        tmp_path,
        "```python\nx = 1\n```\n\ntext\n\n```python\ny = x + 1\nz = missing + y\n```\n\n```python\nw = 0\n```\n",
    )
    run = PageRun("README.md", tmp_path, root=tmp_path)
    run.start()
    run.run(first)
    with pytest.raises(DocsBlockError) as failed:
        run.run(second)
    message = str(failed.value)
    assert "the block at README.md:8 failed at README.md:9:\n    z = missing + y" in message
    assert "NameError: name 'missing' is not defined" in message
    assert "tests/docs_fixtures/readme.py" in message
    with pytest.raises(DocsBlockError, match=r"README.md:13 was not run: the block at README.md:8 before it failed"):
        run.run(third)


def test_a_syntax_error_names_the_page_line(tmp_path: Path) -> None:
    (block,) = _page(tmp_path, "text\n\n```python\nx = 1\ny = (\n```\n")
    with pytest.raises(DocsBlockError, match=r"README.md:5: the block is not valid Python"):
        compile_block(block, tmp_path)


def test_a_marker_makes_every_call_of_its_function_smaller(tmp_path: Path) -> None:
    (block,) = _page(
        tmp_path,
        "<!-- docs-test: f(n=3, extra=True) -->\n\n```python\n"
        "def f(n=100, extra=False):\n    return n, extra\n\n\na, b = f(), f(n=1000)\nc = (lambda: 0)()\n```\n",
    )
    run = PageRun("README.md", tmp_path, root=tmp_path)
    run.run(block)
    assert run.namespace["a"] == (3, True) and run.namespace["b"] == (3, True) and run.namespace["c"] == 0


def test_a_marker_naming_no_call_of_its_block_is_an_error(tmp_path: Path) -> None:
    (block,) = _page(tmp_path, "<!-- docs-test: maximize(steps=8) -->\n```python\nx = 1\n```\n")
    with pytest.raises(
        DocsBlockError, match=r"README.md:3: the docs-test marker names maximize, which the block never"
    ):
        compile_block(block, tmp_path)


def test_blocks_run_in_their_own_directory_after_the_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = _page(tmp_path, "```python\nfrom pathlib import Path\n\nPath('out.txt').write_text(given)\n```\n")
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "readme.py").write_text("given = 'from the fixture'\n")
    monkeypatch.setattr("docs_blocks.FIXTURES", fixtures)
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = PageRun("README.md", workdir, root=tmp_path)
    run.start()
    run.run(block)
    assert (workdir / "out.txt").read_text() == "from the fixture"
    assert Path.cwd() != workdir


def test_blocks_run_offline(tmp_path: Path) -> None:
    (block,) = _page(
        tmp_path, "```python\nimport socket\n\nsocket.create_connection(('192.0.2.1', 80), timeout=1)\n```\n"
    )
    run = PageRun("README.md", tmp_path, root=tmp_path)
    with pytest.raises(DocsBlockError, match=r"tried to connect to \('192.0.2.1', 80\): blocks run offline"):
        run.run(block)
