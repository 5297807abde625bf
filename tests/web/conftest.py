"""Fixtures for the browser UI: a throwaway project folder over the toy world, and a test client on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_CONCEPT = "toy-purple-star"  # 5 images of a purple star; init word "shape"
# The pages are tested on a user's fresh photos: the concept's committed sidecar captions stay behind.
PHOTOS_ONLY = shutil.ignore_patterns("*.txt")


def make_project(root: Path) -> Path:
    """A project folder: models/toy-world and configs/ link to the checkout's (read-only use), the toy concept
    copied into training_data/, and empty embeddings/, logs/, outputs/."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy-world").symlink_to(REPO / "models" / "toy-world", target_is_directory=True)
    (root / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    shutil.copytree(REPO / "training_data" / TOY_CONCEPT, root / "training_data" / TOY_CONCEPT, ignore=PHOTOS_ONLY)
    for name in ("embeddings", "logs", "outputs"):
        (root / name).mkdir()
    return root


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    """A fresh project folder (make_project) for each test."""
    return make_project(tmp_path / "project")


@pytest.fixture
def web_settings(web_root: Path):
    from ldm.web.settings import WebSettings

    return WebSettings(root=web_root, extra_hosts=("testserver",))


@pytest.fixture
def client(web_settings):
    """A TestClient (Host: testserver) over the app on web_root; closed (services stopped) after the test."""
    from fastapi.testclient import TestClient

    from ldm.web.app import create_app

    with TestClient(create_app(web_settings)) as test_client:
        yield test_client
