"""A background job the page polls: one at a time, in a thread of the server, with progress and a result.

Generation and comparison take seconds on the toy world and minutes on a real model: too long for one
request, so a POST starts the work and returns at once, and the page polls the job's state. Sampling has
no signal handlers to own (unlike Lightning's training, which runs as a child process), so a thread is
enough; the one-job lock keeps two samplings from competing for the same cores and memory.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ldm.errors import LdmUserError
from ldm.web.security import WebInputError

log = logging.getLogger(__name__)
_IDS = itertools.count(1)


class JobStopped(LdmUserError):
    """The job was stopped on request (the page's Stop, or the server shutting down)."""


@dataclass
class Job:
    """What a page polls: `state` is "running", "done" or "failed"; `done`/`total` count steps or cells."""

    kind: str  # "generate" or "compare": which page started it
    id: int = field(default_factory=lambda: next(_IDS))
    state: str = "running"
    done: int = 0
    total: int = 0
    message: str = ""  # what it is doing now, e.g. "loading toy-world/toy-world.safetensors"
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    stop_requested: bool = False

    def step(self, _info: object = None) -> None:
        """A sampler step done (the samplers' callback); raises JobStopped once a stop was asked for."""
        self.done += 1
        if self.stop_requested:
            raise JobStopped(f"{self.kind} stopped after {self.done} of {self.total} steps")

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if message is not None:
            self.message = message

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "seconds": round(time.monotonic() - self.started, 1),
            "result": self.result,
            "error": self.error,
        }


def error_line(exc: BaseException) -> str:
    """One line for the page: the user error's own message, else what failed (the log has the traceback)."""
    if isinstance(exc, LdmUserError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError):
        from ldm.cli import os_error_message

        return os_error_message(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller size or fewer images"
    return f"internal error ({type(exc).__name__}: {exc}); see the server log"


class JobRunner:
    """Runs one job at a time in a daemon thread; remembers the latest job of each kind for polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Job | None = None
        self.latest: dict[str, Job] = {}

    @property
    def running(self) -> Job | None:
        return self._running

    def busy_message(self) -> str | None:
        job = self._running
        return None if job is None else f"a {job.kind} job is running (job {job.id})"

    def start(self, kind: str, work: Callable[[Job], dict[str, Any]]) -> Job:
        """Start `work(job)` (returns the job's result) unless a job runs already (HTTP 409)."""
        with self._lock:
            if self._running is not None:
                raise WebInputError(f"{self.busy_message()}; wait until it finishes, then try again", status=409)
            job = Job(kind)
            self._running = job
            self.latest[kind] = job
        threading.Thread(target=self._run, args=(job, work), name=f"web-{kind}-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        result, error = None, None
        try:
            result = work(job)
        except Exception as exc:  # a failed job reports its one line; the server goes on
            if not isinstance(exc, (LdmUserError, OSError)):
                log.exception("%s job %d failed", job.kind, job.id)
            error = error_line(exc)
        with self._lock:  # free before "done" shows, so a poller may start the next job at once
            self._running = None
            job.result, job.error = result, error
            job.state = "failed" if error is not None else "done"

    def stop(self) -> bool:
        """Ask the running job to stop at its next sampler step; False when none runs."""
        job = self._running
        if job is None:
            return False
        job.stop_requested = True
        job.message = "stopping"
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job runs (tests, shutdown); False if `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running is not None:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True
