"""Shared fixtures. Tests never touch the network: the hub is forced offline for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd_helpers import TINY_CONFIG, TINY_SDXL_CONFIG, TINY_V2_CONFIG, load_config, randomize_  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config():
    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A tiny SD-shaped LatentDiffusion with random, non-degenerate weights (shared; do not mutate)."""
    from ldm.model_loading import build_model

    torch.manual_seed(0)
    return randomize_(build_model(tiny_config.model), seed=0).eval()


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model, tmp_path_factory) -> Path:
    """The tiny model saved as a CompVis-style .ckpt (state_dict wrapper)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.ckpt"
    torch.save({"state_dict": tiny_model.state_dict(), "global_step": 0}, path)
    return path


@pytest.fixture(scope="session")
def tiny_v2_config():
    return load_config(TINY_V2_CONFIG)


@pytest.fixture(scope="session")
def tiny_v2_model(tiny_v2_config):
    """A tiny SD-2.x-shaped LatentDiffusion (OpenCLIP text tower, eps) with random, non-degenerate weights
    (shared; do not mutate)."""
    from ldm.model_loading import build_model

    torch.manual_seed(0)
    return randomize_(build_model(tiny_v2_config.model), seed=0).eval()


@pytest.fixture(scope="session")
def tiny_v2_ckpt(tiny_v2_model, tmp_path_factory) -> Path:
    """The tiny SD 2.x model saved as a Stability-style .ckpt (state_dict wrapper)."""
    path = tmp_path_factory.mktemp("tiny_v2") / "tiny-v2.ckpt"
    torch.save({"state_dict": tiny_v2_model.state_dict(), "global_step": 0}, path)
    return path


@pytest.fixture(scope="session")
def tiny_sdxl_config():
    """tests/fixtures/tiny-sdxl.yaml: SDXL's classes and keys (CLIP-L 32 + bigG 64 wide, vector 112)."""
    return load_config(TINY_SDXL_CONFIG)


@pytest.fixture(scope="module")
def tiny_sdxl_model(tiny_sdxl_config):
    """A tiny SDXL-shaped LatentDiffusion (GeneralConditioner, UNet with label_emb) with random,
    non-degenerate weights, shared within a test module (do not mutate)."""
    from ldm.model_loading import build_model

    torch.manual_seed(0)
    return randomize_(build_model(tiny_sdxl_config.model), seed=0).eval()


@pytest.fixture(scope="module")
def tiny_sdxl_ckpt(tiny_sdxl_model, tmp_path_factory) -> Path:
    """The tiny SDXL model saved as a .safetensors in the real sd_xl_base layout (`model.diffusion_model.*`,
    `first_stage_model.*`, `conditioner.embedders.{0,1}.*`), without the noise schedule or position ids."""
    from safetensors.torch import save_file

    from ldm.models.diffusion.schedule import SCHEDULE_BUFFERS

    sd = {k: v.contiguous() for k, v in tiny_sdxl_model.state_dict().items() if k not in SCHEDULE_BUFFERS}
    path = tmp_path_factory.mktemp("tiny_sdxl") / "tiny-sdxl.safetensors"
    save_file(sd, str(path))
    return path
