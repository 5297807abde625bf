"""Which Stable Diffusion family a checkpoint or a config belongs to, and the config to pass for it.

Nothing in a file says v or eps, but its keys say the family: the text encoder's key prefix (CLIP under
`cond_stage_model.transformer.` for SD 1.x, OpenCLIP under `cond_stage_model.model.` for SD 2.x, SDXL's
`conditioner.embedders.*`), else the UNet's cross-attention width (768 / 1024 / 2048). A config's family
is its text encoder class (SDXL: a `conditioner_config`, sgm's GeneralConditioner). A file of another family
than its config gets one line naming the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ldm.errors import CheckpointError

SD1, SD2, SDXL = "SD 1.x", "SD 2.x", "SDXL"
CONFIGS = "configs/stable-diffusion/"
# What to pass for a file of each family. SD 2.x: the file cannot tell v from eps, so both are named.
HINTS = {
    SD1: f"pass --config {CONFIGS}v1-inference.yaml (training: --base {CONFIGS}v1-finetune.yaml)",
    SD2: (
        f"pass --config {CONFIGS}v2-inference-v.yaml (768 v-model) or {CONFIGS}v2-inference.yaml (512-base) "
        f"(training: --base {CONFIGS}v2-finetune.yaml)"
    ),
    SDXL: f"pass --config {CONFIGS}sdxl-base-inference.yaml (training: --base {CONFIGS}sdxl-finetune.yaml)",
}
CROSS_ATTN_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
WIDTHS = {768: SD1, 1024: SD2, 2048: SDXL}
ENCODER_CLASSES = {"FrozenCLIPEmbedder": SD1, "FrozenOpenCLIPEmbedder": SD2}


def family_of_state_dict(sd: Mapping[str, Any]) -> str | None:
    """SD1/SD2/SDXL from an SD file's keys (values: tensors or shapes), or None when nothing tells."""
    keys = list(sd)
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return SDXL
    if "cond_stage_model.model.token_embedding.weight" in sd:
        return SD2
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return SD1
    shape = getattr(sd.get(CROSS_ATTN_KEY), "shape", sd.get(CROSS_ATTN_KEY))  # a tensor or its shape
    return WIDTHS.get(int(shape[1])) if isinstance(shape, (tuple, torch.Size)) and len(shape) == 2 else None


def family_of_config(model_config: Mapping[str, Any]) -> str | None:
    """SD1/SD2/SDXL from the `model` node's text side: SDXL's `conditioner_config`, else the text encoder
    class (its last dotted name), or None."""
    params = model_config.get("params") or {}
    if params.get("conditioner_config") is not None:
        return SDXL
    cond = params.get("cond_stage_config") or {}
    target = str(cond.get("target", ""))
    return ENCODER_CLASSES.get(target.rpartition(".")[2])


def check_family(model_config: Mapping[str, Any], sd: Mapping[str, Any], source: str) -> None:
    """One CheckpointError naming the config to pass when `sd` is of another family than the config."""
    ours, theirs = family_of_config(model_config), family_of_state_dict(sd)
    if ours is None or theirs is None or ours == theirs:
        return
    raise CheckpointError(f"{source} is an {theirs} model but the config is for {ours}; {HINTS[theirs]}")
