"""The loaded-model cache: one model in memory at a time, and the `Generate` built around it.

A real model is gigabytes and takes a minute to load, so the server keeps the last one and reloads only
when a request names another model (or its file changed). The `Generate` around it is cheap (the prompt
conditioner and the embedding library) and is rebuilt when the explicit embeddings change (a run's
snapshot); the embeddings folder is re-scanned by the library on every call. Every use runs as a job
of the one `JobRunner`, so one generation or comparison runs at a time, and never while a training run
holds the machine (`require_idle`).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ldm.web.catalog import ModelEntry
from ldm.web.jobs import Job, JobRunner
from ldm.web.machine import require_idle
from ldm.web.state import WebState

log = logging.getLogger(__name__)


def _model_key(entry: ModelEntry) -> tuple:
    """Which model is loaded: the catalog id, its files, and the weights' size and mtime (a replaced file
    under the same name must not keep serving the old weights)."""
    try:
        stat = entry.weights.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        stamp = (None, None)
    return (entry.id, str(entry.weights), str(entry.inference_config), *stamp)


class Generators:
    """`state.service("generators", Generators)`: the model cache and the one-job runner of Generate/Compare."""

    def __init__(self, state: WebState):
        self.state = state
        self.jobs = JobRunner()
        self._lock = threading.RLock()  # the cache itself; jobs are already one at a time
        self._model: Any = None
        self._model_key: tuple | None = None
        self._generate: Any = None
        self._generate_key: tuple | None = None
        self._hashes: dict[tuple, str] = {}

    # -- the machine ---------------------------------------------------------------------------------
    def busy_message(self) -> str | None:
        """Why the machine is busy with sampling (for the training page's one-heavy-job rule), or None."""
        return self.jobs.busy_message()

    def start(self, kind: str, work: Callable[[Job], dict[str, Any]]) -> Job:
        """Start a sampling job: refused (409) while a training run or another job holds the machine."""
        require_idle(self.state)
        return self.jobs.start(kind, work)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the running job at its next step and wait for it (server shutdown, tests)."""
        self.jobs.stop()
        self.jobs.wait(timeout)

    # -- the cache -----------------------------------------------------------------------------------
    def model(self, entry: ModelEntry, job: Job | None = None) -> Any:
        """The loaded model of `entry`, loading it (and dropping the previous one first) when needed."""
        from ldm.generate import Generate

        key = _model_key(entry)
        with self._lock:
            if self._model_key != key:
                self.release()
                if job is not None:
                    job.message = f"loading {entry.id}"
                log.info("loading %s (%s)", entry.id, entry.inference_config)
                self._model = Generate(config=entry.inference_config, weights=entry.weights).load_model()
                self._model_key = key
            return self._model

    def generate(self, entry: ModelEntry, embedding_paths: Sequence[Path] = (), folder: bool = True, job=None):
        """A `Generate` over the cached model of `entry` with these explicit embedding files (and, with
        `folder`, the embeddings folder); the same object again while nothing changed."""
        from ldm.generate import Generate

        with self._lock:
            model = self.model(entry, job)
            key = (self._model_key, tuple(str(p) for p in embedding_paths), folder)
            if self._generate_key != key:
                self._generate = None
                directory = self.state.settings.embeddings_dir if folder else None
                gen = Generate(
                    config=entry.inference_config,
                    weights=entry.weights,
                    model=model,
                    embedding_paths=list(embedding_paths),
                    embedding_directory=directory,
                )
                _ = gen.conditioner  # read the explicit files now: a misfit is this call's one-line error
                self._generate, self._generate_key = gen, key
            return self._generate

    def model_hash(self, entry: ModelEntry) -> str:
        """A1111's short hash of the weights (what invoke.py writes into the PNG), computed once per file."""
        from ldm.invoke.session import legacy_model_hash

        key = _model_key(entry)
        if key not in self._hashes:
            self._hashes[key] = legacy_model_hash(entry.weights) if entry.weights.is_file() else ""
        return self._hashes[key]

    @property
    def loaded(self) -> str | None:
        """The id of the model in memory, or None."""
        return None if self._model_key is None else self._model_key[0]

    def release(self) -> None:
        """Forget the loaded model (e.g. before a training run needs the memory)."""
        with self._lock:
            if self._model is None:
                return
            log.info("releasing %s", self._model_key[0] if self._model_key else "the model")
            self._model = self._model_key = self._generate = self._generate_key = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover - torch is a dependency
                pass


def generators(state: WebState) -> Generators:
    """The app's one model cache."""
    return state.service("generators", Generators)
