"""A diffusers SD 2.x folder's text encoder -> our OpenCLIP layout, and the config that fits it.

diffusers stores SD 2.x's OpenCLIP ViT-H text tower as a transformers `CLIPTextModel` (exact GELU) with
separate q/k/v projections, and its converter keeps only the blocks SD conditions on: 23 of 24, no
`text_projection`, no `logit_scale` (CLIPTextModel's `final_layer_norm` on its last layer is SD 2's
`ln_final(output of block 23)`). Here q, k and v are stacked back into OpenCLIP's `in_proj` and every
other tensor is renamed one to one. The missing last block is not invented: `fit_text_config` builds our
encoder as `layers: L-1, layer: last, projection: False`, the same function as `L, penultimate`.
A folder also says v or eps (its scheduler config), which a .ckpt cannot: it must match the config.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ldm.errors import CheckpointError, ConfigError
from ldm.modules.encoders.open_clip import text_tower_config

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]
PREFIX = "cond_stage_model.model."
# transformers CLIPEncoderLayer sub-module -> OpenCLIP ResidualAttentionBlock sub-module
BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
FIXED = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
BLOCK_INDEX = re.compile(rf"{re.escape(PREFIX)}transformer\.resblocks\.(\d+)\.")


def is_open_clip_text_encoder(folder: Path) -> bool:
    """SD 2.x's text encoder is saved with exact GELU; SD 1.x's CLIP ViT-L uses quick_gelu."""
    config_file = folder / "text_encoder" / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("hidden_act") == "gelu"


def text_encoder_to_open_clip(
    sd: Tensors, source: str = "text_encoder", prefix: str = PREFIX, projection: bool = False
) -> Tensors:
    """CLIPTextModel keys (with or without `text_model.`) -> `{prefix}*` (SD 2.x: `cond_stage_model.model.`);
    q/k/v stacked. With `projection` (SDXL's CLIPTextModelWithProjection), its `text_projection.weight`
    (a Linear's [out, W]) becomes OpenCLIP's `text_projection` [W, out], used as `x @ P`."""
    out: Tensors = {}
    qkv: dict[tuple[str, str], dict[int, torch.Tensor]] = defaultdict(dict)
    for key, value in sd.items():
        bare = key.removeprefix("text_model.")
        if bare == "embeddings.position_ids":  # a buffer older transformers saved; ours is not stored
            continue
        match = LAYER_KEY.match(bare)
        if projection and key == "text_projection.weight":
            name, value = "text_projection", value.T.contiguous()
        elif bare in FIXED:
            name = FIXED[bare]
        elif match and match.group(2) in QKV:
            qkv[(match.group(1), match.group(3))][QKV[match.group(2)]] = value
            continue
        elif match and match.group(2) in BLOCK:
            index, module, param = match.groups()
            name = f"transformer.resblocks.{index}.{BLOCK[module]}.{param}"
        else:
            raise CheckpointError(
                f"{source}: unexpected key '{key}' for an SD 2.x text encoder (CLIPTextModel); "
                "re-save the folder with diffusers, or pass the .ckpt/.safetensors file"
            )
        if prefix + name in out:
            raise CheckpointError(f"{source}: '{bare}' appears with and without the text_model. prefix; re-save it")
        out[prefix + name] = value
    for (index, param), parts in sorted(qkv.items()):
        if sorted(parts) != [0, 1, 2]:
            raise CheckpointError(f"{source}: layer {index} lacks some of q_proj/k_proj/v_proj {param}; re-save it")
        out[f"{prefix}transformer.resblocks.{index}.attn.in_proj_{param}"] = torch.cat([parts[i] for i in range(3)])
    return out


def fit_text_config(model_config: Any, sd: Tensors, source: str) -> None:
    """Make the config's OpenCLIP encoder the one the folder holds: its L-1 blocks, last layer, no projection.

    Changes `model_config` (an OmegaConf `model` node) in place; a file that keeps its projection (all
    blocks) is left to the ordinary key check. An SDXL config is fitted by ldm.diffusers_sdxl."""
    if model_config.params.get("conditioner_config") is not None:
        from ldm.diffusers_sdxl import fit_sdxl_text_config  # it imports this module

        fit_sdxl_text_config(model_config, sd, source)
        return
    cond = model_config.params.get("cond_stage_config")
    if cond is None or PREFIX + "text_projection" in sd or PREFIX + "token_embedding.weight" not in sd:
        return
    params = cond.get("params") or {}
    blocks = len({int(m.group(1)) for k in sd if (m := BLOCK_INDEX.match(k))})
    layer = params.get("layer", "last")
    text_config = dict(params.get("text_config") or {})
    try:
        configured = text_tower_config(
            params.get("arch", "ViT-H-14"), text_config, layer, params.get("max_length", 77)
        )["layers"]
    except ConfigError:
        return  # the config's own error comes when the model is built
    if layer != "penultimate" or blocks != configured - 1:
        raise CheckpointError(
            f"{source}: its text encoder holds {blocks} blocks and no projection (diffusers keeps the blocks "
            f"SD 2.x uses), but the config's has {configured} with layer {layer!r}; pass an SD 2.x config "
            "(layer: penultimate), e.g. configs/stable-diffusion/v2-inference-v.yaml"
        )
    text_config["layers"] = blocks
    cond.params = {**params, "text_config": text_config, "layer": "last", "projection": False}
    log.info(
        "%s: text encoder built with its %d blocks, last layer, no projection (= SD 2.x penultimate)", source, blocks
    )


PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v"}


def check_prediction_type(folder: Path, parameterization: str) -> None:
    """A diffusers folder, unlike a .ckpt, says v or eps (scheduler/scheduler_config.json): it must agree
    with the config's `parameterization`, or every image would be noise."""
    try:
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    theirs = PREDICTION_TYPES.get(scheduler.get("prediction_type")) if isinstance(scheduler, dict) else None
    if theirs is None or theirs == parameterization:
        return
    from ldm.diffusers_sdxl import is_sdxl_folder  # it imports this module

    if is_sdxl_folder(folder):  # one SDXL inference config; a v-prediction finetune sets the key
        fix = (
            f"set model.params.parameterization: {theirs} in a copy of "
            "configs/stable-diffusion/sdxl-base-inference.yaml"
        )
    else:
        config = "v2-inference-v.yaml (768 v-model)" if theirs == "v" else "v2-inference.yaml (512-base)"
        fix = f"pass --config configs/stable-diffusion/{config}"
    raise CheckpointError(
        f"diffusers folder {folder} predicts {scheduler['prediction_type']} (scheduler/scheduler_config.json) "
        f"but the config says parameterization {parameterization!r}; {fix}"
    )
