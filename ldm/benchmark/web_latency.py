"""How fast the web UI's pages answer while a toy training run holds the machine (`scripts/benchmark.py web`).

The real server (`scripts/invoke.py --web`) serves a fresh toy project; a training of the toy world is
started through the Train page's API, and once it runs, each main page gets `concurrency` simultaneous GETs,
`rounds` times. Latency is each request's wall time from send to the last byte; p50/p95 are taken over all
rounds of a page."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ldm.benchmark.web_server import WebServer, toy_project
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

PAGES = ("/dataset", "/train", "/compare", "/generate", "/embeddings")
CONCEPT = "toy-purple-star"
MODEL_ID = "toy-world/toy-world.safetensors"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (q in 0..100) of values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def burst(url: str, concurrency: int, timeout: float) -> list[float]:
    """`concurrency` GETs of url released together; each one's seconds to the last byte of a 200."""
    gate = threading.Barrier(concurrency)

    def one(_: int) -> float:
        gate.wait()
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            if response.status != 200:
                raise ConfigError(f"GET {url} answered {response.status}")
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(concurrency)))


def _request(base: str, path: str, payload: dict | None = None, timeout: float = 60) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def start_toy_training(base: str, steps: int) -> str:
    """Start a toy-world training of the toy concept through the Train page's API, as its Start button
    does (the form's defaults otherwise); returns the run's id."""
    params = {
        "model": MODEL_ID,
        "concept": CONCEPT,
        "name": "latency",
        "init_word": "shape",
        "learning_rate": "0.005",
        "max_steps": steps,
        "save_every": 50,
    }
    return _request(base, "/api/train/start", params)["run"]


def training_status(base: str, run: str) -> dict:
    return _request(base, f"/api/train/runs/{run}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def measure(server: WebServer, pages: tuple[str, ...], concurrency: int, rounds: int, timeout: float) -> dict:
    """Per page: every request's latency over `rounds` bursts, and its p50/p95 in milliseconds."""
    latencies: dict[str, list[float]] = {page: [] for page in pages}
    for round_index in range(rounds):
        for page in pages:
            latencies[page] += burst(server.url + page, concurrency, timeout)
        log.info("round %d of %d done", round_index + 1, rounds)
    return {
        page: {
            "requests": len(values),
            "p50_ms": round(1000 * percentile(values, 50), 1),
            "p95_ms": round(1000 * percentile(values, 95), 1),
            "max_ms": round(1000 * max(values), 1),
        }
        for page, values in latencies.items()
    }


def web_latency(
    concurrency: int = 20, rounds: int = 5, train_steps: int = 100000, train: bool = True, timeout: float = 600
) -> dict:
    """Start the server on a fresh toy project, start a training (unless train=False), measure every page
    (and, while training, the status the Train page polls), stop everything; the figures and the training's
    steps before and after, which show it went on while the pages were measured."""
    with tempfile.TemporaryDirectory(prefix="ti-web-latency-") as tmp:
        root = toy_project(Path(tmp) / "project", concepts=(CONCEPT,))
        with WebServer(root) as server:
            training, pages = None, PAGES
            if train:
                run = start_toy_training(server.url, train_steps)
                wait_for(lambda: _step(server.url, run) > 0, timeout, "the toy training's first step")
                training = {"run": run, "step_before": _step(server.url, run)}
                pages = (*PAGES, f"/api/train/runs/{run}")
            figures = measure(server, pages, concurrency, rounds, timeout)
            if training is not None:
                status = training_status(server.url, training["run"])
                training.update(step_after=status["step"], state_after=status["state"])
    return {"concurrency": concurrency, "rounds": rounds, "training": training, "pages": figures}


def _step(base: str, run: str) -> int:
    return int(training_status(base, run).get("step") or 0)
