"""SDXL text-side test helpers: the conditioner of our SDXL config, full size or the tiny fixture's (CLIP-L
width 32, bigG width 64, both with the real 49408-token vocabulary), and the transformers twins diffusers'
own converters make of its weights."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from sd_helpers import ROOT

TINY_SDXL_CONFIG = ROOT / "tests" / "fixtures" / "tiny-sdxl.yaml"
SDXL_CONFIG = ROOT / "configs" / "stable-diffusion" / "sdxl-base-inference.yaml"
# The tiny config's text encoders and size embedders (tests/fixtures/tiny-sdxl.yaml).
CLIP_L_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
BIG_G_TINY = dict(width=64, layers=3, heads=4)
SIZE_KEYS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
OUTDIM = 8
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
BIG_G_PREFIX = "conditioner.embedders.1.model."


def emb_models(tiny: bool = True) -> list[dict]:
    """The conditioner's emb_models of tests/fixtures/tiny-sdxl.yaml (tiny) or of
    configs/stable-diffusion/sdxl-base-inference.yaml (full size), as plain dicts."""
    path = TINY_SDXL_CONFIG if tiny else SDXL_CONFIG
    return OmegaConf.to_container(OmegaConf.load(path).model.params.conditioner_config.params.emb_models)


def _strict(twin: torch.nn.Module, sd: dict) -> torch.nn.Module:
    result = twin.load_state_dict(sd, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    return twin.eval()


def clip_l_twin(encoder, sd: dict, eos_token_id: int = 2) -> torch.nn.Module:
    """transformers' CLIPTextModel from `sd` (keys under `conditioner.embedders.0.transformer.`) via
    diffusers' convert_ldm_clip_checkpoint. eos_token_id 2 is what SDXL's text_encoder/config.json says."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{**encoder.text_model.config.to_dict(), "eos_token_id": eos_token_id})
    with torch.device("meta"):
        twin = CLIPTextModel(config)
    converted = convert_ldm_clip_checkpoint({k: v for k, v in sd.items() if k.startswith(CLIP_L_PREFIX)})
    converted = {k.removeprefix("text_model."): v for k, v in converted.items()}  # transformers >= 5.6: flat
    converted.pop("embeddings.position_ids", None)
    twin = _strict(twin, converted)
    twin.embeddings.position_ids = torch.arange(config.max_position_embeddings).expand(1, -1)
    return twin


def big_g_twin(encoder, sd: dict, eos_token_id: int = 2) -> torch.nn.Module:
    """transformers' CLIPTextModelWithProjection (all blocks, the projection transposed into a Linear) from
    `sd` (keys under `conditioner.embedders.1.model.`) via diffusers' convert_open_clip_checkpoint.
    eos_token_id 2 is what SDXL's text_encoder_2/config.json says: transformers then pools at argmax(ids)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    m = encoder.model
    config = CLIPTextConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.width,
        intermediate_size=4 * m.width,
        projection_dim=int(m.text_projection.shape[1]),
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        max_position_embeddings=m.context_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=eos_token_id,
        pad_token_id=1,
    )
    with torch.device("meta"):
        twin = CLIPTextModelWithProjection(config)
    converted = convert_open_clip_checkpoint(twin, sd, prefix=BIG_G_PREFIX)
    twin = _strict(twin, converted)
    twin.text_model.embeddings.position_ids = torch.arange(m.context_length).expand(1, -1)
    return twin
