"""Read a diffusers-format SDXL folder into sgm's checkpoint layout (as sd_xl_base_1.0.safetensors holds it).

An SDXL folder (model_index.json `StableDiffusionXLPipeline`) has `unet/` (UNet2DConditionModel with
`addition_embed_type: text_time`: its `add_embedding` MLP is our `label_emb.0`), `vae/`, `text_encoder/`
(CLIP ViT-L, a CLIPTextModel with all 12 layers: renamed under `conditioner.embedders.0.transformer.
text_model.`) and `text_encoder_2/` (OpenCLIP bigG as a CLIPTextModelWithProjection with all 32 blocks:
q/k/v stacked back and the projection transposed, under `conditioner.embedders.1.model.`), plus
`tokenizer/` and `tokenizer_2/` (the same BPE vocabulary; the second pads with "!" = id 0, which our
OpenCLIP tokenizer does by id). The UNet and VAE rename exactly as SD 1.x/2.x's (ldm/diffusers_folder.py).
The one tensor a folder lacks is bigG's `logit_scale` (unused by SDXL): it is not invented;
`fit_sdxl_text_config` builds that encoder without it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ldm.diffusers_folder import (
    _check_unet_matches_config,
    _read_json,
    read_part,
    text_encoder_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)
from ldm.diffusers_sd2 import text_encoder_to_open_clip
from ldm.errors import CheckpointError

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]
CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
BIG_G_PREFIX = "conditioner.embedders.1.model."
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
POSITION_IDS = "embeddings.position_ids"  # a buffer older transformers saved; no file of ours holds it


def _model_index(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_sdxl_folder(folder: Path) -> bool:
    """model_index.json names an SDXL pipeline, or the folder has SDXL's second text encoder."""
    folder = Path(folder).expanduser()
    name = _model_index(folder).get("_class_name")
    return (isinstance(name, str) and name.startswith("StableDiffusionXL")) or (folder / "text_encoder_2").is_dir()


def read_sdxl_folder(folder: Path) -> Tensors:
    """All weights of an SDXL diffusers folder in sgm's layout: `model.diffusion_model.*` (with
    `label_emb.0.*`), `first_stage_model.*`, `conditioner.embedders.0.transformer.text_model.*`,
    `conditioner.embedders.1.model.*` (everything but `logit_scale`)."""
    folder = Path(folder).expanduser()
    _check_parts(folder)
    unet_config = _read_json(folder / "unet" / "config.json")
    if unet_config and unet_config.get("addition_embed_type") != "text_time":
        raise CheckpointError(
            f"{folder}/unet: config.json has addition_embed_type {unet_config.get('addition_embed_type')!r}, not "
            "SDXL's 'text_time'; pass an SDXL base (or finetune) diffusers folder"
        )
    out: Tensors = {}
    out.update(_one_to_one(folder, "unet", unet_to_ldm))
    out.update(_one_to_one(folder, "vae", vae_to_ldm))
    out.update(_one_to_one(folder, "text_encoder", _clip_l_to_ldm))
    big_g = read_part(folder / "text_encoder_2")
    out.update(text_encoder_to_open_clip(big_g, f"{folder}/text_encoder_2", BIG_G_PREFIX, projection=True))
    if not any(k.startswith("model.diffusion_model.label_emb.") for k in out):
        raise CheckpointError(f"{folder}/unet has no add_embedding (SDXL's vector input); pass an SDXL folder")
    if unet_config:
        _check_unet_matches_config(out, unet_config, folder)
    log.info("converted SDXL diffusers folder %s: %d tensors", folder, len(out))
    return out


def _check_parts(folder: Path) -> None:
    missing = [part for part in PARTS if not (folder / part).is_dir()]
    if missing == ["text_encoder"]:
        raise CheckpointError(
            f"diffusers folder {folder} has text_encoder_2/ but no text_encoder/: an SDXL refiner, which is not "
            "supported; pass the SDXL base model (or a finetune of it)"
        )
    if missing:
        raise CheckpointError(
            f"SDXL diffusers folder {folder} has no {', '.join(p + '/' for p in missing)} subfolder; pass a "
            "complete folder (unet/, vae/, text_encoder/, text_encoder_2/) or an SDXL .safetensors file"
        )


def _one_to_one(folder: Path, part: str, convert) -> Tensors:
    sd = read_part(folder / part)
    sd = {k: v for k, v in sd.items() if k.removeprefix("text_model.") != POSITION_IDS}
    converted = convert(sd, source=f"{folder}/{part}")
    if len(converted) != len(sd):
        raise CheckpointError(
            f"{folder}/{part}: {len(sd)} tensors became {len(converted)} keys; the folder's key layout is not SDXL's"
        )
    return converted


def _clip_l_to_ldm(sd: Tensors, source: str) -> Tensors:
    return text_encoder_to_ldm(sd, source=source, prefix=CLIP_L_PREFIX)


def fit_sdxl_text_config(model_config: Any, sd: Tensors, source: str) -> None:
    """Fit an SDXL config (an OmegaConf `model` node, changed in place) to weights read from `source`:
    an OpenCLIP text encoder whose file has a projection but no `logit_scale` (a diffusers folder's
    text_encoder_2) is built without it; the tokenizers are searched beside the model (tokenizer/,
    tokenizer_2/)."""
    cond = model_config.params.get("conditioner_config")
    if cond is None:
        return
    if cond.get("params") is None:
        cond.params = {}
    if not cond.params.get("model_path"):
        cond.params.model_path = str(source)
    for index, entry in enumerate(cond.params.get("emb_models") or []):
        prefix = f"conditioner.embedders.{index}.model."
        if prefix + "text_projection" not in sd or prefix + "logit_scale" in sd:
            continue
        if entry.get("params") is None:
            entry.params = {}
        entry.params.logit_scale = False
        log.info(
            "%s: text encoder %d built without logit_scale (unused; a diffusers folder does not keep it)", source, index
        )
