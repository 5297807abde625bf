"""Oracle helpers shared by the SD 1.x, 2.x and SDXL oracles: our UNet/VAE weights converted by diffusers'
own single-file converters and loaded strictly into its UNet2DConditionModel/AutoencoderKL."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf
from sd_helpers import strict_into

TOL = 1e-4


def diffusers_unet(cfg: Any, sd: dict, image_size: int | None = None, **overrides: Any) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel from our `model.diffusion_model.*` weights (every one converted);
    `overrides` patch the converter's config (a tiny SDXL's context width does not say "SDXL" to it)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    ucfg = {
        **create_unet_diffusers_config_from_ldm(OmegaConf.to_container(cfg), sd, image_size=image_size),
        **overrides,
    }
    converted = convert_ldm_unet_checkpoint(sd, ucfg)
    assert len(converted) == sum(k.startswith("model.diffusion_model.") for k in sd)
    unet = strict_into(lambda: UNet2DConditionModel(**ucfg), converted)
    unet.converted_config = ucfg
    return unet


def diffusers_vae(cfg: Any, sd: dict, image_size: int | None = None) -> torch.nn.Module:
    """diffusers' AutoencoderKL from our `first_stage_model.*` weights (every one converted)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, create_vae_diffusers_config_from_ldm

    vcfg = create_vae_diffusers_config_from_ldm(OmegaConf.to_container(cfg), sd, image_size=image_size)
    converted = convert_ldm_vae_checkpoint(sd, vcfg)
    assert len(converted) == sum(k.startswith("first_stage_model.") for k in sd)
    return strict_into(lambda: AutoencoderKL(**vcfg), converted)


@torch.no_grad()
def assert_vae_matches_diffusers(
    cfg: Any, model: torch.nn.Module, sd: dict, image_side: int, latent_side: int, image_size: int | None = None
) -> None:
    """Encoding (mean, logvar) of a random image and decoding of random latents agree to TOL in fp32."""
    vae = diffusers_vae(cfg, sd, image_size=image_size)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, image_side, image_side, generator=g) * 2 - 1
    ours = model.first_stage_model.encode(image)
    theirs = vae.encode(image).latent_dist
    assert (ours.mean - theirs.mean).abs().max().item() <= TOL
    assert (ours.logvar - theirs.logvar).abs().max().item() <= TOL
    z = torch.randn(1, 4, latent_side, latent_side, generator=g)
    dec_ours, dec_theirs = model.first_stage_model.decode(z), vae.decode(z).sample
    assert dec_ours.shape == (1, 3, 8 * latent_side, 8 * latent_side) and dec_ours.std() > 0.05
    assert (dec_ours - dec_theirs).abs().max().item() <= TOL
