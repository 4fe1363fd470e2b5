"""Ctrl-C: the command says one line and exits with 130, and a run open then is "interrupted", not "failed"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import deepscope as ds
from deepscope.cli import INTERRUPTED
from deepscope.store import Reader, list_runs

SRC = str(Path(__file__).parent.parent / "src")


def test_run_closed_by_ctrl_c_is_interrupted_and_by_an_error_failed(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), ds.Run(tmp_path / "stopped") as run:
        run.log({"loss": 1.0}, step=0)
        raise KeyboardInterrupt
    with pytest.raises(ValueError), ds.Run(tmp_path / "broken") as run:
        run.log({"loss": 1.0}, step=0)
        raise ValueError("bad batch")
    with ds.Run(tmp_path / "done") as run:
        run.log({"loss": 1.0}, step=0)
    with Reader(tmp_path / "stopped") as reader:
        assert reader.info()["status"] == "interrupted"
        assert "run/error" not in reader.tags()  # a stop asked for is no error
        assert reader.scalars("loss").values.tolist() == [1.0]  # what was logged before is kept
    with Reader(tmp_path / "broken") as reader:
        assert reader.info()["status"] == "failed"
        assert reader.records("run/error")[0].text == "ValueError: bad batch"
    statuses = {summary.name: summary.status for summary in list_runs(tmp_path)}
    assert statuses == {"stopped": "interrupted", "broken": "failed", "done": "finished"}


def _interrupted(code: str, ready: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter, send it SIGINT (Ctrl-C) once it printed ``ready``; what it did."""
    environ = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        # Ctrl-C's default, as a terminal starts a command: a process inherits an ignored SIGINT (pytest-xdist's
        # workers may ignore it) and Python then never raises KeyboardInterrupt, so the test would see no Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        for line in process.stdout:
            if ready in line:
                break
            assert time.monotonic() < deadline, "the command never got to work"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_during_the_demo_says_one_line_exits_130_and_marks_the_run(tmp_path: Path) -> None:
    # The real `deepscope demo gradients`, its training steps made long (a sleep in each) so Ctrl-C lands mid-run.
    done = _interrupted(
        """
        import sys, time
        from deepscope import cli
        from deepscope.demo import gradients

        def slow_steps(steps, **options):
            for step in steps:
                if step == 3:
                    print("training", flush=True)
                time.sleep(0.05)
                yield step

        gradients.tqdm = slow_steps
        sys.exit(cli.main(["demo", "gradients", "--out", sys.argv[1], "--no-progress"]))
        """,
        "training",
        str(tmp_path / "runs"),
    )
    assert done.returncode == INTERRUPTED == 130
    assert done.stderr.strip() == "deepscope: interrupted"  # no traceback
    with Reader(tmp_path / "runs" / "tanh") as reader:
        assert reader.info()["status"] == "interrupted"
        assert len(reader.records("weight/0.weight")) >= 1  # the run kept what it logged before
    assert not (tmp_path / "runs" / "relu").exists()  # the demo stopped there


def test_ctrl_c_stops_the_board_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    done = _interrupted(
        """
        import sys
        from deepscope import cli

        sys.exit(cli.main(["board", "--logdir", sys.argv[1], "--port", "0"]))
        """,
        "deepscope board: serving",
        str(tmp_path),
    )
    assert done.returncode == 130
    assert done.stderr.strip() == "deepscope: interrupted"
