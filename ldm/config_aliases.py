"""Targets of Stability's generative-models (`sgm`) configs, mapped to this project's classes.

Stability's `sd_xl_base.yaml` names its classes under `sgm.` (and, in its first release, under `ldm.` paths
that differ from ours); `instantiate_from_config` looks a target up here first, so that file builds as it is.
The sgm-only keys those classes take (denoiser, sampler, loss) are accepted by LatentDiffusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MODEL = "ldm.models.diffusion.ddpm.LatentDiffusion"
_CONDITIONER = "ldm.modules.encoders.general_conditioner.GeneralConditioner"
_CLIP_L = "ldm.modules.encoders.modules.FrozenCLIPEmbedder"
_BIG_G = "ldm.modules.encoders.open_clip.FrozenOpenCLIPEmbedder2"
_SIZE = "ldm.modules.encoders.size_embedding.ConcatTimestepEmbedderND"
_UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
_VAE = "ldm.models.autoencoder.AutoencoderKL"

TARGET_ALIASES: dict[str, str] = {
    "sgm.models.diffusion.DiffusionEngine": _MODEL,
    "sgm.modules.GeneralConditioner": _CONDITIONER,
    "sgm.modules.encoders.modules.GeneralConditioner": _CONDITIONER,
    "sgm.modules.encoders.modules.FrozenCLIPEmbedder": _CLIP_L,
    "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2": _BIG_G,
    "sgm.modules.encoders.modules.ConcatTimestepEmbedderND": _SIZE,
    "sgm.modules.diffusionmodules.openaimodel.UNetModel": _UNET,
    "sgm.models.autoencoder.AutoencoderKLInferenceWrapper": _VAE,
    # generative-models' first release named the same classes under `ldm.`
    "ldm.models.diffusion.DiffusionEngine": _MODEL,
    "ldm.modules.GeneralConditioner": _CONDITIONER,
    "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder2": _BIG_G,
    "ldm.modules.encoders.modules.ConcatTimestepEmbedderND": _SIZE,
    "ldm.models.autoencoder.AutoencoderKLInferenceWrapper": _VAE,
}

# sgm's denoiser scaling class -> our parameterization (the config, not the file, says eps or v).
_SCALINGS = {"EpsScaling": "eps", "VScaling": "v"}


def resolve_target(target: str) -> str:
    """The class path to import for a config `target` (an sgm name becomes ours; others are unchanged)."""
    return TARGET_ALIASES.get(target, target)


def parameterization_of_denoiser(denoiser_config: Mapping[str, Any] | None) -> str | None:
    """ "eps"/"v" from sgm's `denoiser_config.params.scaling_config.target`, or None when it does not say."""
    if not denoiser_config:
        return None
    scaling = ((denoiser_config.get("params") or {}).get("scaling_config") or {}).get("target", "")
    return _SCALINGS.get(str(scaling).rpartition(".")[2])
