"""One training run at a time, as a child process running main.py (never a thread: Lightning's signal
handlers need a main thread). Start builds the command line a user would type; Stop is SIGTERM (main.py
saves a snapshot and last.ckpt after the current step, then exits) and SIGKILL after a grace period;
Save now is a request file the run looks for after every step; Resume is `main.py -r logs/<run>`.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ldm.callbacks.save_request import SAVE_REQUEST
from ldm.training.launch import run_name
from ldm.training.run import RUN_NOW_ENV
from ldm.web import run_status as rs
from ldm.web.security import WebInputError, child
from ldm.web.state import WebState
from ldm.web.train_params import TEMPLATE_FILE, TrainParams, main_args

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class TrainingRunner:
    """The app's training service (`state.service("training", TrainingRunner)`)."""

    stop_grace_s = 120.0  # a step plus a preview grid on a big model; then SIGKILL (last.ckpt stays)

    def __init__(self, state: WebState):
        self.state = state
        self.settings = state.settings
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._logdir: Path | None = None
        self._first: tuple[float, int] | None = None  # (time, step) of the first step seen: the ETA's origin
        self._start_step = 0
        atexit.register(self.close)  # the server going away takes its training run with it (saved first)

    # -- the one-heavy-job rule -------------------------------------------------------------------------
    def _alive(self) -> bool:
        with self._lock:
            if self._proc is None:
                return False
            code = self._proc.poll()
            if code is None:
                return True
            self._finish(code)
            return False

    def _finish(self, code: int) -> None:
        """The child ended: record its exit code (how the page tells stopped, finished and crashed apart)."""
        assert self._logdir is not None
        record = rs.read_record(self._logdir)
        record["exit_code"] = code
        rs.write_record(self._logdir, record)
        log.info("training run %s ended with exit code %s", self._logdir.name, code)
        self._proc = None

    def busy_message(self) -> str | None:
        if not self._alive():
            return None
        assert self._logdir is not None
        return f"training run {self._logdir.name!r} is running"

    def _refuse_if_busy(self) -> None:
        reason = self.busy_message()
        if reason is not None:
            raise WebInputError(f"{reason}; one training at a time: stop it or wait until it finishes", status=409)
        sampling = self.state.services.get("generators")
        if sampling is not None:
            reason = sampling.busy_message()
            if reason is not None:  # one heavy job at a time, both ways
                raise WebInputError(f"{reason}; stop it or wait until it finishes, then start training", status=409)
            sampling.release()  # the training child needs the memory the loaded model holds

    # -- start, resume, stop, save now -------------------------------------------------------------------
    def _main_py(self) -> str:
        own = self.settings.root / "main.py"
        return "main.py" if own.is_file() else str(REPO_ROOT / "main.py")

    def start(self, params: TrainParams) -> dict[str, Any]:
        """Start a new run of `params`; 409 while another runs. Returns the new run's status."""
        with self._lock:
            self._refuse_if_busy()
            now = time.strftime("%Y-%m-%dT%H-%M-%S")
            _, name = run_name(str(self.settings.data_root / params.concept), params.name, now=now)
            logdir = self.settings.logs_dir / name
            if logdir.exists():
                raise WebInputError(f"run folder {name!r} exists already; start again in a second", status=409)
            logdir.mkdir(parents=True)
            if params.templates() is not None:
                (logdir / TEMPLATE_FILE).write_text("\n".join(params.templates()) + "\n", encoding="utf-8")
            args = main_args(self.settings, params, logdir)
            record = {
                "command": shlex.join(["python", "main.py", *args]),
                "max_steps": params.max_steps,
                "params": {**dataclasses.asdict(params), "model": params.model.id},
                "stopped": False,
                "exit_code": None,
            }
            rs.write_record(logdir, record)
            self._launch(logdir, args, env={RUN_NOW_ENV: now})
            return self.status(name)

    def resume(self, run_id: str) -> dict[str, Any]:
        """Go on with a stopped or crashed run from its last.ckpt, as `python main.py -r logs/<run>`."""
        with self._lock:
            self._refuse_if_busy()
            logdir = self.run_dir(run_id)
            status = rs.run_status(logdir)
            if status["state"] == "finished":
                raise WebInputError(f"run {run_id!r} is finished ({status['step']} steps); start a new run")
            if not (logdir / "checkpoints" / "last.ckpt").is_file():
                raise WebInputError(
                    f"run {run_id!r} saved no resumable checkpoint before it ended; start it again as a new run"
                )
            args = ["-r", os.path.relpath(logdir, self.settings.root)]
            record = rs.read_record(logdir)
            record.update(stopped=False, exit_code=None, max_steps=status["max_steps"])
            record.setdefault("resumes", []).append(shlex.join(["python", "main.py", *args]))
            rs.write_record(logdir, record)
            self._launch(logdir, args, env={})
            return self.status(run_id)

    def _launch(self, logdir: Path, args: list[str], env: dict[str, str]) -> None:
        python = self.settings.python or sys.executable
        (logdir / SAVE_REQUEST).unlink(missing_ok=True)  # a request left by an earlier process is stale
        with open(logdir / rs.LOG, "ab") as out:  # the child keeps its own descriptor
            out.write(f"$ python main.py {shlex.join(args)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [python, self._main_py(), *args],
                cwd=self.settings.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                start_new_session=True,  # the terminal's Ctrl-C reaches the server, which stops the run itself
            )
        self._logdir = logdir
        self._first = None
        self._start_step = rs.run_status(logdir)["step"]
        log.info("training run %s started (pid %d)", logdir.name, self._proc.pid)

    def _current(self, run_id: str) -> subprocess.Popen:
        """The live process of `run_id`; WebInputError when that run is not the one running."""
        logdir = self.run_dir(run_id)
        if not self._alive() or self._logdir != logdir or self._proc is None:
            raise WebInputError(f"run {run_id!r} is not running; resume it first", status=409)
        return self._proc

    def stop(self, run_id: str) -> dict[str, Any]:
        """SIGTERM now (the run saves, then exits after its current step), SIGKILL after stop_grace_s."""
        with self._lock:
            proc = self._current(run_id)
            record = rs.read_record(self._logdir)
            record["stopped"] = True
            rs.write_record(self._logdir, record)
            proc.send_signal(signal.SIGTERM)
            timer = threading.Timer(self.stop_grace_s, _kill_if_alive, args=(proc,))
            timer.daemon = True
            timer.start()
        return {**self.status(run_id), "stopping": True}

    def save_now(self, run_id: str) -> dict[str, Any]:
        """Ask the running run for a snapshot (embeddings_gs-N, the latest embedding, last.ckpt) after this step."""
        with self._lock:
            self._current(run_id)
            (self.run_dir(run_id) / SAVE_REQUEST).touch()
        return self.status(run_id)

    def close(self, grace_s: float = 30.0) -> None:
        """Stop the running child (saved first) and wait for it; SIGKILL after grace_s."""
        with self._lock:
            proc = self._proc if self._alive() else None
            if proc is None:
                return
            record = rs.read_record(self._logdir)
            record["stopped"] = True
            rs.write_record(self._logdir, record)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._alive()

    # -- reading runs -------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        logdir = child(self.settings.logs_dir, run_id, what="run")
        if not rs.is_run(logdir):
            raise WebInputError(
                f"run {run_id!r} is not a run folder of {self.settings.logs_dir.name}/; pick one from the list"
            )
        return logdir

    def status(self, run_id: str) -> dict[str, Any]:
        logdir = self.run_dir(run_id)
        with self._lock:
            alive = self._alive() and self._logdir == logdir
        status = rs.run_status(logdir, alive=alive)
        if alive:
            status["eta_s"] = self._eta(status["step"], status["max_steps"])
        return status

    def _eta(self, step: int, total: int | None) -> float | None:
        """Seconds left at the pace since the first step this process made (model loading left out)."""
        if total is None or step <= self._start_step:
            return None
        if self._first is None:
            self._first = (time.monotonic(), step)
            return None
        t0, s0 = self._first
        if step <= s0:
            return None
        return round((total - step) * (time.monotonic() - t0) / (step - s0), 1)

    def runs(self) -> list[dict[str, Any]]:
        """Every run folder under logs/, newest first, with its state and step."""
        root = self.settings.logs_dir
        folders = [p for p in root.iterdir() if rs.is_run(p)] if root.is_dir() else []
        folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        out = []
        for logdir in folders:
            status = self.status(logdir.name)
            out.append({k: status[k] for k in ("run", "state", "step", "max_steps", "resumable")})
        return out


def _kill_if_alive(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        log.warning("training process %d did not stop within the grace period; killing it", proc.pid)
        proc.kill()
