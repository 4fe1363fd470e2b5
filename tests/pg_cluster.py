"""A throwaway PostgreSQL server for the tests: ``initdb`` in a temporary directory, a free port on 127.0.0.1, no
password (trust, local only), stopped and removed at the end.

PostgreSQL refuses to run as root, so as root (CI) the server runs as the ``postgres`` user (``runuser``), which
Debian's ``postgresql`` package creates; ``make postgres`` installs it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian's versioned directory (newest first), else the ``PATH``."""
    for candidate in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    ):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing() -> str | None:
    """Why no cluster can be started here, or ``None``."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (no initdb): `make postgres` (Debian's postgresql package)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the 'postgres' user to start PostgreSQL (Debian's postgresql package)"
        if shutil.which("runuser") is None:
            return "running as root needs runuser to start PostgreSQL as the 'postgres' user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed: pip install 'deepscope[postgres]'"
    return None


_RESTART: dict[str, Callable[[], None]] = {}


def restart(url: str) -> None:
    """Restart the server of ``url`` (fast shutdown: every connection is cut), as an administrator might."""
    _RESTART[url]()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def cluster() -> Iterator[str]:
    """Start a server; yields the URL of its ``postgres`` database; stops it and removes its files at the end."""
    binaries = bin_dir()
    assert binaries is not None
    root = Path(tempfile.mkdtemp(prefix="deepscope-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-k {root} -p {port} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _RESTART[url] = lambda: run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )
        try:
            yield url
        finally:
            _RESTART.pop(url, None)
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
