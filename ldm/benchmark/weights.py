"""The weights both sides of a benchmark read: one SD v1 file (random full-size weights unless given)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ldm.fileio import atomic_path

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
SD_CONFIG = ROOT / "configs" / "stable-diffusion" / "v1-inference.yaml"
FINETUNE_CONFIG = ROOT / "configs" / "stable-diffusion" / "v1-finetune.yaml"
SDXL_FINETUNE_CONFIG = ROOT / "configs" / "stable-diffusion" / "sdxl-finetune.yaml"
FINETUNE_CONFIGS = {"sd1": FINETUNE_CONFIG, "sdxl": SDXL_FINETUNE_CONFIG}  # by --model
PathLike = str | Path


def random_checkpoint(path: PathLike, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write (once) a full-size SD v1 checkpoint with random weights in the real key layout."""
    from ldm.model_loading import build_model

    path = Path(path)
    if path.is_file():
        return path
    log.info("building a random full-size SD v1 model -> %s", path)
    torch.manual_seed(seed)
    model = build_model(OmegaConf.load(SD_CONFIG).model, random_init=True)
    # An SD file holds the three networks only; the embedding manager belongs to training.
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("embedding_manager.")
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path
