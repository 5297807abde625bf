"""The same work done the way diffusers does it, on the same weights (converted with diffusers' own code).

train: one step of diffusers' examples/textual_inversion/textual_inversion.py — VAE encode every step,
text encoder in fp32, UNet and VAE cast to the weight dtype, AdamW over the whole token-embedding matrix
with the rows of the other tokens restored after each step.
sample: StableDiffusionPipeline with the DDIM scheduler SD v1 ships with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ldm.benchmark.weights import SD_CONFIG
from ldm.safe_load import read_state_dict

PLACEHOLDER = "<bench-token>"
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _strict(cls: Any, config: dict, state: dict) -> Any:
    with torch.device("meta"):
        module = cls(**config)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def load_components(ckpt: str, dtype: torch.dtype, like_example: bool = False) -> dict:
    """UNet and VAE in `dtype`, the text encoder in fp32. `like_example`: load them in fp32 first and cast,
    as examples/textual_inversion does (`from_pretrained`, then `.to(weight_dtype)`)."""
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

    def loaded(converted: dict) -> dict:  # from_pretrained's default dtype is fp32, whatever the file holds
        return (
            {k: v.float() if v.is_floating_point() else v for k, v in converted.items()} if like_example else converted
        )

    sd = read_state_dict(ckpt)
    original = OmegaConf.to_container(OmegaConf.load(SD_CONFIG))
    ucfg = create_unet_diffusers_config_from_ldm(original, sd)
    unet = _strict(UNet2DConditionModel, ucfg, loaded(convert_ldm_unet_checkpoint(sd, ucfg))).to(dtype)
    vcfg = create_vae_diffusers_config_from_ldm(original, sd)
    vae = _strict(AutoencoderKL, vcfg, loaded(convert_ldm_vae_checkpoint(sd, vcfg))).to(dtype)
    prefix = "cond_stage_model.transformer.text_model."
    text_state = {k[len(prefix) :]: v.float() for k, v in sd.items() if k.startswith(prefix)}
    text_state.pop("embeddings.position_ids", None)
    text = CLIPTextModel(CLIPTextConfig(**VIT_L14_TEXT))
    text.load_state_dict(text_state, strict=False)
    del sd
    return {"unet": unet, "vae": vae, "text_encoder": text.eval(), "tokenizer": load_tokenizer(None, None)}


@dataclass
class DiffusersTrainer:
    """The example's training state: the placeholder token added, only the embedding matrix trainable."""

    parts: dict
    dtype: torch.dtype
    resolution: int
    batch_size: int

    def __post_init__(self) -> None:
        from diffusers import DDPMScheduler

        tok, text = self.parts["tokenizer"], self.parts["text_encoder"]
        tok.add_tokens([PLACEHOLDER])
        text.resize_token_embeddings(len(tok))
        emb = text.get_input_embeddings().weight
        with torch.no_grad():
            emb[-1] = emb[tok.convert_tokens_to_ids("cat")]
        inner = getattr(text, "text_model", text)  # transformers 5 dropped the text_model level
        for module in (inner.encoder, inner.final_layer_norm, inner.embeddings.position_embedding):
            module.requires_grad_(False)
        self.parts["unet"].requires_grad_(False)
        self.parts["vae"].requires_grad_(False)
        text.train()
        self.optimizer = torch.optim.AdamW(
            text.get_input_embeddings().parameters(), lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
        )
        self.scheduler = DDPMScheduler(**SCHEDULE)
        self.original = emb.detach().clone()
        self.keep = torch.ones(len(tok), dtype=torch.bool)
        self.keep[-1] = False
        ids = tok(
            [f"a photo of a {PLACEHOLDER}"] * self.batch_size,
            padding="max_length",
            truncation=True,
            max_length=tok.model_max_length,
            return_tensors="pt",
        ).input_ids
        self.input_ids = ids
        g = torch.Generator().manual_seed(0)
        self.pixels = torch.rand(self.batch_size, 3, self.resolution, self.resolution, generator=g) * 2 - 1

    def step(self, g: torch.Generator) -> float:
        unet, vae, text = self.parts["unet"], self.parts["vae"], self.parts["text_encoder"]
        latents = vae.encode(self.pixels.to(self.dtype)).latent_dist.sample(generator=g).detach()
        latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g, dtype=latents.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g)
        noisy = self.scheduler.add_noise(latents, noise, t)
        hidden = text(self.input_ids)[0].to(dtype=self.dtype)
        pred = unet(noisy, t, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            text.get_input_embeddings().weight[self.keep] = self.original[self.keep]
        return loss.item()


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
