"""Parts of a trained toy base model that another toy model of the same world reuses as they are: the
autoencoder (same 32 px world, same latents) and the attribute classifier. The SDXL-shaped toy takes both
from models/toy-world/, so only its UNet and text encoders are new, and its figures compare with the
SD 1.x toy's on the very same latents and judge."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ldm.errors import ConfigError

log = logging.getLogger(__name__)
VAE_PREFIX = "first_stage_model."


def load_autoencoder(vae: nn.Module, path: str | Path) -> None:
    """Copy a toy checkpoint's `first_stage_model.*` weights (latent scale already folded in) into `vae`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--vae_from {path} does not exist; pass a toy base model such as models/toy-world/")
    try:
        state = {k[len(VAE_PREFIX) :]: v for k, v in load_file(str(path)).items() if k.startswith(VAE_PREFIX)}
        with torch.no_grad():
            vae.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--vae_from {path}: its autoencoder does not fit this config's ({first}); pass a toy base model "
            "of the same world, such as models/toy-world/toy-world.safetensors"
        ) from None
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    log.info("autoencoder taken from %s", path)
