"""The explorer's jobs, on the server's side: a worker process that explains, a queue, one job per client, a timeout.

Nothing here imports torch: the worker (:mod:`deepscope.explore.worker`) is another Python process, started on the
first request, spoken to in JSON lines over its stdin and stdout. One thread hands it the queued jobs one at a time;
a job that takes longer than ``timeout`` seconds fails, and the worker is stopped (the next job starts a new one).
A result already in the run's folder (``explore/<key>/result.json``, keyed by run, checkpoint step, item, method,
target and layer) is answered at once, without the worker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....errors import BadInputError

FILES = ("input.png", "heatmap.png", "overlay.png")
# A result's pictures: the input, and a heatmap and an overlay per method (the first unnumbered, then -1, -2, ...).
FILE = re.compile(r"input\.png|(?:heatmap|overlay)(?:-[1-9])?\.png")


@dataclass
class Job:
    """One request: queued, running, done (``result``) or failed (``error``)."""

    id: str
    client: str
    run: str
    run_dir: Path
    key: str
    request: dict[str, Any]
    status: str = "queued"
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cached: bool = False

    def answer(self, position: int | None) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "id": self.id,
            "run": self.run,
            "key": self.key,
            "status": self.status,
            "position": position,
            "seconds": round(end - self.started, 3),
            "cached": self.cached,
            "result": self.result,
            "error": self.error,
        }


def job_key(run: str, step: int | None, request: dict[str, Any]) -> str:
    """The cache key of a request: the same run, checkpoint, item (or upload), methods, target and layer give the
    same key."""
    if request.get("predictions"):
        return hashlib.sha256(json.dumps([run, step, "predictions"]).encode()).hexdigest()[:32]
    methods = request.get("methods") or [request["method"]]
    what = [run, step, request.get("item"), request.get("upload"), methods, request.get("target"), request.get("layer")]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


class Explorer:
    """The worker and the jobs of one board.

    Args:
        spec: what the worker makes: ``{"model": "pkg.module:factory" | {"file": path}, "data": ...}``.
        timeout: the seconds a job may take (its wait in the queue not counted).
        start_timeout: the seconds the worker may take to start (import torch, make the model and the data).
    """

    def __init__(self, spec: dict[str, Any], timeout: float = 60.0, start_timeout: float = 120.0) -> None:
        self.spec = spec
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._lock = threading.Lock()  # the jobs
        self._worker_lock = threading.Lock()  # starting and stopping the worker
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # queued job ids, first first
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._hello: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- the page's requests ------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the worker offers: ``{"methods", "items", "labels", "classes"}`` (starts it if need be)."""
        with self._worker_lock:
            if self._hello is None:
                self._start()
            assert self._hello is not None
            return self._hello

    def submit(self, client: str, run: str, run_dir: Path, step: int | None, request: dict[str, Any]) -> Job:
        """Queue ``request`` for ``client``; a client with a job queued or running gets that one back instead
        (one job per client). A result already in the run's folder is done at once."""
        key = job_key(run, step, request)
        with self._lock:
            for job in self._jobs.values():
                if job.client == client and job.status in ("queued", "running"):
                    return job
            job = Job(str(next(self._ids)), client, run, run_dir, key, {**request, "step": step})
            self._jobs[job.id] = job
            cached = run_dir / "explore" / key / ("predictions.json" if request.get("predictions") else "result.json")
            if cached.is_file():
                job.status, job.cached, job.finished = "done", True, time.monotonic()
                found = json.loads(cached.read_text())
                job.result = (
                    {"step": found["step"], "items": len(found["predicted"])} if request.get("predictions") else found
                )
                return job
            self._order.append(job.id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="deepscope-explore", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's answer: its status, ``position`` in the queue (0: next), ``queued`` (jobs waiting in all),
        ``others_running`` (another job is running), and its result or error."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise BadInputError(f"no job {job_id!r}")
            position = self._order.index(job.id) if job.id in self._order else None
            answer = job.answer(position)
            # the queue, as the page shows it: how many jobs wait, and whether another client's job is running
            answer["queued"] = len(self._order)
            answer["others_running"] = any(
                other.status == "running" and other.id != job.id for other in self._jobs.values()
            )
            return answer

    def close(self) -> None:
        """Stop the worker and the dispatching thread."""
        self._closed = True
        self._queue.put(None)
        with self._worker_lock:
            self._stop()

    # ---- the worker ---------------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the worker and wait for its hello (called with the worker's lock held)."""
        command = [sys.executable, "-m", "deepscope.explore.worker", json.dumps(self.spec)]
        env = dict(os.environ)
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1, env=env
        )
        self._answers = queue.Queue()
        threading.Thread(target=self._read, args=(self._process, self._answers), daemon=True).start()
        try:
            first = self._answers.get(timeout=self.start_timeout)
        except queue.Empty:
            self._stop()
            raise BadInputError(f"the explorer's worker did not start in {self.start_timeout:g} s") from None
        if first is None or "hello" not in first:
            self._stop()
            why = first.get("error") if first else "it exited"
            raise BadInputError(f"the explorer's worker could not start: {why}")
        self._hello = first["hello"]

    @staticmethod
    def _read(process: subprocess.Popen[str], answers: queue.Queue[dict[str, Any] | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            answers.put(json.loads(line))
        answers.put(None)  # the worker exited

    def _stop(self) -> None:
        process, self._process = self._process, None
        self._hello = None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _dispatch(self) -> None:
        while not self._closed:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.id in self._order:
                    self._order.remove(job.id)
                job.status, job.started = "running", time.monotonic()
            with self._worker_lock:
                try:
                    if self._process is None or self._process.poll() is not None:
                        self._start()
                except BadInputError as error:
                    with self._lock:
                        job.status, job.error, job.finished = "failed", str(error), time.monotonic()
                    continue
                process, answers = self._process, self._answers
            assert process is not None and process.stdin is not None
            request = {"id": job.id, "run_dir": os.fspath(job.run_dir), "key": job.key, **job.request}
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                answer = answers.get(timeout=self.timeout)
            except queue.Empty:
                answer = {"ok": False, "error": f"it took longer than {self.timeout:g} s; the worker was stopped"}
                with self._worker_lock:
                    self._stop()
            except OSError as error:
                answer = {"ok": False, "error": f"the worker is gone ({error})"}
            if answer is None:
                answer = {"ok": False, "error": "the worker exited"}
            with self._lock:
                job.finished = time.monotonic()
                if answer.get("ok"):
                    job.status, job.result = "done", answer["result"]
                else:
                    job.status, job.error = "failed", str(answer.get("error"))
