"""The image size a model was trained at, from its config: the default when the user gives none.

`model.params.image_size` is the latent side the model was trained on (64 for SD 1.x and the SD 2.x
512-base, 96 for the 768 v-model, 128 for SDXL); times the VAE's downsampling (8) it is the pixel side:
512, 768 or 1024.
The UNet's own `image_size` is marked "unused" in the original configs (32), so it is only a fallback
for configs without the top-level key (the tiny test configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ldm.errors import ConfigError

FALLBACK_SIDE = 512
SDXL_FALLBACK_SIDE = 1024  # an SDXL config (conditioner_config) without image_size, as sgm's own


def _latent_factor(params: Any) -> int:
    ddconfig = ((params.get("first_stage_config") or {}).get("params") or {}).get("ddconfig") or {}
    ch_mult = ddconfig.get("ch_mult") or [1, 2, 4, 4]
    return 2 ** (len(ch_mult) - 1)


def default_image_side(config: Any) -> int:
    """Pixel side of the model's training images, from a config path or node (with or without `model`)."""
    if isinstance(config, (str, Path)):
        if not Path(config).is_file():
            raise ConfigError(f"config not found: {config}; pass e.g. configs/stable-diffusion/v1-inference.yaml")
        config = OmegaConf.load(config)
    node = config.get("model", config) if hasattr(config, "get") else {}
    params = node.get("params") or {}
    latent = params.get("image_size")
    if latent is None:
        unet = params.get("unet_config") or params.get("network_config") or {}  # ours / sgm's key
        latent = (unet.get("params") or {}).get("image_size")
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
        return SDXL_FALLBACK_SIDE if params.get("conditioner_config") is not None else FALLBACK_SIDE
    return latent * _latent_factor(params)


def resolve_size(width: int | None, height: int | None, config: Any) -> tuple[int, int]:
    """The user's width/height, each one not given taken from the config's training size."""
    if width is not None and height is not None:
        return width, height
    side = default_image_side(config)
    return (side if width is None else width), (side if height is None else height)
