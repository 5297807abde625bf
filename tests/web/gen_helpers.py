"""Helpers for the Generate and Compare tests: a project whose app (and loaded toy model) a whole test module
shares, a job waiter, and embedding files of the toy's width or of another model's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TOY_MODEL = "toy-world/toy-world.safetensors"
TOY_WIDTH = 64  # the toy world's text encoder width
HANG_GUARD_S = 600  # a job that takes this long is stuck, not slow


def make_project(root: Path) -> Path:
    """models/toy-world (a link to the checkout's), configs/, and empty embeddings/, logs/, outputs/."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy-world").symlink_to(REPO / "models" / "toy-world", target_is_directory=True)
    (root / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    for name in ("embeddings", "logs", "outputs", "training_data"):
        (root / name).mkdir()
    return root


@contextmanager
def app_client(root: Path) -> Iterator:
    """A TestClient over the app on `root`; a job still running at the end is stopped and waited for."""
    from fastapi.testclient import TestClient

    from ldm.web.app import create_app
    from ldm.web.settings import WebSettings

    with TestClient(create_app(WebSettings(root=root, extra_hosts=("testserver",)))) as client:
        try:
            yield client
        finally:
            gens = client.app.state.web.services.get("generators")
            if gens is not None:
                gens.close(timeout=HANG_GUARD_S)


def wait_job(client, page: str) -> dict:
    """Poll /api/<page>/job until the job leaves "running"; returns its JSON."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/{page}/job").json()["job"]
        if job is not None and job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"the {page} job did not finish in {HANG_GUARD_S} s")


def term(name: str, width: int = TOY_WIDTH, seed: int = 0, token: str | None = "*", n: int = 1):
    from ldm.embeddings import LoadedEmbedding

    generator = torch.Generator().manual_seed(seed)
    return LoadedEmbedding(name=name, vectors=torch.randn(n, width, generator=generator) * 0.2, token=token)


def sdxl_term(name: str):
    """A full-size SDXL term (clip_l 768 + clip_g 1280): a misfit on every SD 1.x model, the toy's included."""
    from ldm.embeddings import SDXL, LoadedEmbedding

    return LoadedEmbedding(
        name=name, vectors=torch.randn(1, 2048) * 0.01, token=name, format=SDXL, part_widths=(768, 1280)
    )


def write_term(path: Path, embedding) -> Path:
    from ldm.embeddings import write_embedding_file

    return write_embedding_file(path, embedding)


def make_run(root: Path, name: str, steps: tuple[int, ...] = (5, 10), width: int = TOY_WIDTH) -> Path:
    """logs/<name>/checkpoints/embeddings_gs-N.pt for each step (different vectors each) and embeddings.pt."""
    checkpoints = root / "logs" / name / "checkpoints"
    checkpoints.mkdir(parents=True)
    for i, step in enumerate(steps):
        write_term(checkpoints / f"embeddings_gs-{step}.pt", term("*", width, seed=100 + i))
    write_term(checkpoints / "embeddings.pt", term("*", width, seed=100 + len(steps) - 1))
    return checkpoints
