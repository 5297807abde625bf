"""Diffusers' parts on the same weights (converted with diffusers' own code): the training floor (a bare
UNet forward and backward to the context), StableDiffusionPipeline for sampling, and the networks the
diffusers folder for its textual-inversion example is written from (ldm/benchmark/example_inputs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ldm.benchmark.weights import SD_CONFIG
from ldm.safe_load import read_state_dict

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _strict(cls: Any, config: dict, state: dict) -> Any:
    with torch.device("meta"):
        module = cls(**config)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def load_components(ckpt: str, dtype: torch.dtype, config: str | Path = SD_CONFIG) -> dict:
    """UNet and VAE in `dtype`, the text encoder in fp32; `config` is the checkpoint's model config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from ldm.modules.encoders.modules import VIT_L14_TEXT
    from ldm.modules.encoders.tokenizer import load_tokenizer

    sd = read_state_dict(ckpt)
    original = OmegaConf.to_container(OmegaConf.load(config))
    ucfg = create_unet_diffusers_config_from_ldm(original, sd)
    unet = _strict(UNet2DConditionModel, ucfg, convert_ldm_unet_checkpoint(sd, ucfg)).to(dtype)
    vcfg = create_vae_diffusers_config_from_ldm(original, sd)
    vae = _strict(AutoencoderKL, vcfg, convert_ldm_vae_checkpoint(sd, vcfg)).to(dtype)
    prefix = "cond_stage_model.transformer.text_model."
    text_state = {k[len(prefix) :]: v.float() for k, v in sd.items() if k.startswith(prefix)}
    text_state.pop("embeddings.position_ids", None)
    cond = original["model"]["params"]["cond_stage_config"].get("params") or {}
    text = CLIPTextModel(CLIPTextConfig(**{**VIT_L14_TEXT, **(cond.get("text_config") or {})}))
    text.load_state_dict(text_state, strict=True)
    del sd
    return {"unet": unet, "vae": vae, "text_encoder": text.eval(), "tokenizer": load_tokenizer(None, None)}


def unet_floor_step(unet: torch.nn.Module, latents: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> None:
    """The compute floor: one UNet forward and a backward that reaches only the text context."""
    t = torch.randint(0, 1000, (latents.shape[0],), generator=g)
    ctx = context.detach().requires_grad_(True)
    out = unet(latents, t, ctx).sample if hasattr(unet, "config") else unet(latents, t, context=ctx)
    F.mse_loss(out.float(), latents.float()).backward()


def make_pipeline(parts: dict, dtype: torch.dtype):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"].to(dtype),
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
