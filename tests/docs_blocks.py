"""The Python blocks of the user docs, and running them page by page (used by test_docs.py; see docs/contributing.md).

A page's blocks run in order in one namespace, in a working directory of their own, after the page's fixture
(``tests/docs_fixtures/<page>.py``) has defined the names its blocks assume. A comment on the line before a block
can make its expensive calls smaller::

    <!-- docs-test: maximize(steps=8, size=32), project(n_iter=50) -->

Every call of ``maximize`` in that block then runs with ``steps=8, size=32`` (added, or replacing what the block
passes), every call of ``project`` with ``n_iter=50``. A marker naming a function the block never calls is an error.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "docs_fixtures"

_FENCE_OPEN = re.compile(r"^```python\s*$")
_FENCE_CLOSE = re.compile(r"^```\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:(?P<calls>.*?)-->\s*$")


class DocsBlockError(Exception):
    """A block failed: the message names the page and line, the line of the block that raised, and the error."""


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: str  # relative to the repository root, "/"-separated: "docs/features.md"
    line: int  # the page's line of the block's first line of code
    code: str
    marker: str = ""  # the calls of a "docs-test:" comment before the block ("" when none)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0].strip() if self.code.strip() else ""


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose blocks run: the README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The ```python blocks of a markdown page, in order."""
    name = page.relative_to(root).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not _FENCE_OPEN.match(lines[i]):
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and not _FENCE_CLOSE.match(lines[end]):
            end += 1
        if end == len(lines):
            raise DocsBlockError(f"{name}:{start}: a ```python block is never closed")
        previous = next((text for text in reversed(lines[:i]) if text.strip()), "")
        marker = _MARKER.match(previous.strip())
        found.append(
            Block(name, start + 1, "\n".join(lines[start:end]) + "\n", marker["calls"].strip() if marker else "")
        )
        i = end + 1
    return found


def fixture_path(page: str) -> Path:
    """The fixture of a page: README.md -> tests/docs_fixtures/readme.py, docs/features.md -> .../features.py."""
    return FIXTURES / f"{Path(page).stem.lower()}.py"


def shown(path: Path) -> str:
    """A path as the failure messages show it: relative to the repository where it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _smaller_calls(block: Block) -> dict[str, list[ast.keyword]]:
    try:
        tree = ast.parse(block.marker, mode="eval").body
    except SyntaxError as error:
        raise DocsBlockError(f"{block.id}: the docs-test marker {block.marker!r} is not `f(k=v, ...), ...`") from error
    calls = tree.elts if isinstance(tree, ast.Tuple) else [tree]
    smaller: dict[str, list[ast.keyword]] = {}
    for call in calls:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and not call.args):
            raise DocsBlockError(
                f"{block.id}: the docs-test marker {block.marker!r} must list calls with keywords only, "
                "e.g. `maximize(steps=8), project(n_iter=50)`"
            )
        smaller[call.func.id] = [k for k in call.keywords if k.arg is not None]
    return smaller


class _Smaller(ast.NodeTransformer):
    """Give every call of a marked function the marker's keywords (added, or replacing the block's)."""

    def __init__(self, smaller: dict[str, list[ast.keyword]]) -> None:
        self.smaller = smaller
        self.used: set[str] = set()

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in self.smaller:
            self.used.add(name)
            keywords = self.smaller[name]
            names = {k.arg for k in keywords}
            node.keywords = [k for k in node.keywords if k.arg not in names] + [
                ast.copy_location(ast.keyword(arg=k.arg, value=k.value), node) for k in keywords
            ]
        return node


def compile_block(block: Block, root: Path = ROOT) -> object:
    """The block's code object; its line numbers are the page's, so a traceback shows the page's own lines."""
    filename = str(root / block.page)
    try:
        tree = ast.parse(block.code, filename=filename)
    except SyntaxError as error:
        raise DocsBlockError(
            f"{block.page}:{block.line + (error.lineno or 1) - 1}: the block is not valid Python: {error.msg}"
        ) from None
    ast.increment_lineno(tree, block.line - 1)
    if block.marker:
        smaller = _Smaller(_smaller_calls(block))
        tree = smaller.visit(tree)
        unused = sorted(set(smaller.smaller) - smaller.used)
        if unused:
            raise DocsBlockError(
                f"{block.id}: the docs-test marker names {', '.join(unused)}, which the block never calls: "
                "update the marker with the block"
            )
        ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec")


def _failure(block: Block, error: BaseException, root: Path) -> DocsBlockError:
    filename = str(root / block.page)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    where = f"{block.page}:{frames[-1].lineno}" if frames else block.id
    source = f"\n    {frames[-1].line}" if frames and frames[-1].line else ""
    trace = "".join(traceback.format_exception(error))
    return DocsBlockError(
        f"the block at {block.id} failed at {where}:{source}\n"
        f"{type(error).__name__}: {error}\n"
        f"(names a block assumes come from {shown(fixture_path(block.page))}; "
        f"see docs/contributing.md)\n\n{trace}"
    )


_connect = socket.socket.connect
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _offline_connect(sock: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
        raise OSError(f"a docs block tried to connect to {address}: blocks run offline; give data in the fixture")
    _connect(sock, address)  # type: ignore[arg-type]


@contextlib.contextmanager
def _isolated(workdir: Path) -> Iterator[None]:
    """Run in ``workdir``, offline, on one torch thread, with torch's random state, its thread count and the
    environment given back afterwards. One thread: pytest -n 2 runs two pages at once on two cores, and more
    threads than cores made a block 60 times slower."""
    cwd, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(workdir)
    torch.set_num_threads(1)
    try:
        with (
            mock.patch.dict(os.environ),
            torch.random.fork_rng(devices=[]),
            mock.patch.object(socket.socket, "connect", _offline_connect),
        ):
            yield
    finally:
        torch.set_num_threads(threads)
        os.chdir(cwd)


@dataclass
class PageRun:
    """A page's blocks run so far, in one namespace and one working directory."""

    page: str
    workdir: Path
    root: Path = ROOT
    namespace: dict[str, object] = field(default_factory=dict)
    done: int = 0  # how many of the page's blocks have run
    failed: str = ""  # what failed, if anything did: "the block at docs/x.md:12", "the fixture tests/..."

    def start(self) -> None:
        """Run the page's fixture, if it has one, into the namespace."""
        self.namespace["__name__"] = "__docs__"
        fixture = fixture_path(self.page)
        if not fixture.exists():
            return
        try:
            with _isolated(self.workdir):
                exec(compile(fixture.read_text(encoding="utf-8"), str(fixture), "exec"), self.namespace)
        except Exception as error:
            self.failed = f"the fixture {shown(fixture)}"
            trace = "".join(traceback.format_exception(error))
            raise DocsBlockError(
                f"{self.failed} of {self.page} failed: {type(error).__name__}: {error}\n\n{trace}"
            ) from None

    def run(self, block: Block) -> None:
        """Run one block; raises :class:`DocsBlockError` saying where and why it failed."""
        if self.failed:
            raise DocsBlockError(f"{block.id} was not run: {self.failed} before it failed; fix that one")
        self.done += 1
        try:
            code = compile_block(block, self.root)
            with _isolated(self.workdir):
                exec(code, self.namespace)  # type: ignore[arg-type]
        except DocsBlockError:
            self.failed = f"the block at {block.id}"
            raise
        except Exception as error:
            self.failed = f"the block at {block.id}"
            raise _failure(block, error, self.root) from None

    def close(self) -> None:
        """The fixture's ``docs_teardown()``, if it defines one (a server a block started, say)."""
        teardown = self.namespace.get("docs_teardown")
        if callable(teardown):
            teardown()
