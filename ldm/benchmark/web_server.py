"""The real web UI server as a child process (`scripts/invoke.py --web`), for the latency benchmark and the
browser tests: a project folder laid out like a user's, a free port, wait until it answers, stop it whole."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

from ldm.errors import ConfigError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TOY_CONCEPT = REPO / "training_data" / "toy-purple-star"
PROJECT_FOLDERS = ("training_data", "embeddings", "logs", "outputs")


def toy_project(root: Path, concepts: tuple[str, ...] = ()) -> Path:
    """A project folder like a user's: models/toy-world and configs/ linked from this checkout, empty
    training_data/, embeddings/, logs/, outputs/, and copies of the named concepts of training_data/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    _link(root / "models" / "toy-world", REPO / "models" / "toy-world")
    _link(root / "configs", REPO / "configs")  # MANIFEST.json names its config relative to the project
    for name in PROJECT_FOLDERS:
        (root / name).mkdir(exist_ok=True)
    for concept in concepts:
        dest = root / "training_data" / concept
        dest.mkdir(exist_ok=True)
        for image in sorted((REPO / "training_data" / concept).iterdir()):
            (dest / image.name).write_bytes(image.read_bytes())
    return root


def _link(path: Path, target: Path) -> None:
    if not path.exists():
        path.symlink_to(target, target_is_directory=True)


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; a tiny race with other programs is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """`python scripts/invoke.py --web --port PORT` with cwd=root (the project folder), in its own process
    group so that stopping it also stops a training child it started."""

    def __init__(self, root: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.root = Path(root)
        self.port = port or free_port()
        self.extra_args = extra_args
        self.log_path = self.root / "web-server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> WebServer:  # a hang guard: a loaded machine imports slowly
        command = [sys.executable, str(REPO / "scripts" / "invoke.py"), "--web", "--port", str(self.port)]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [*command, *self.extra_args],
                cwd=self.root,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        log.info("web UI serving %s from %s", self.url, self.root)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll until the server answers (a static file: no page's own work in it); a server that exits or
        never answers raises with its log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"the web server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/static/app.css", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        self._fail(f"the web server did not answer {self.url} within {timeout:.0f} s")

    def _fail(self, what: str) -> NoReturn:
        """One line: what happened and the log's last line (the whole tail goes to the log at INFO)."""
        tail = self.log_tail()
        log.info("web server log, last lines:\n%s", tail)
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        raise ConfigError(f"{what}; its log ends: {lines[-1] if lines else '(empty)'}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the whole group (server and any training child), then SIGKILL what is left."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process.pid, signal.SIGKILL)  # whatever of the group outlived the grace period
        process.wait()

    def __enter__(self) -> WebServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
