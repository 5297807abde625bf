"""Test helpers: configs, random-but-meaningful weights, and conversion to diffusers/transformers."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SD_CONFIG = ROOT / "configs" / "stable-diffusion" / "v1-inference.yaml"
TINY_CONFIG = ROOT / "tests" / "fixtures" / "tiny-v1.yaml"
TINY_V2_CONFIG = ROOT / "tests" / "fixtures" / "tiny-v2.yaml"  # eps; tiny-v2-v.yaml is the v twin
TINY_V2_V_CONFIG = ROOT / "tests" / "fixtures" / "tiny-v2-v.yaml"
TINY_SDXL_CONFIG = ROOT / "tests" / "fixtures" / "tiny-sdxl.yaml"
SDXL_CONFIG = ROOT / "configs" / "stable-diffusion" / "sdxl-base-inference.yaml"
TEXT_PREFIX = "cond_stage_model.transformer.text_model."


def load_config(path: Path = SD_CONFIG):
    return OmegaConf.load(path)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial value (SD zero-initialises output layers, which would make
    any comparison vacuous). Weights ~ N(0, 1/fan_in); norms ~ 1 + noise; biases small."""
    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, norms) and name == "weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def text_state_dict(sd: dict) -> dict:
    """Our text-encoder keys -> transformers 5 CLIPTextModel keys (it has no `text_model.` level)."""
    return {k[len(TEXT_PREFIX) :]: v for k, v in sd.items() if k.startswith(TEXT_PREFIX)}


def strict_into(cls_factory, state_dict: dict) -> torch.nn.Module:
    """Build a diffusers/transformers module on the meta device and load `state_dict` into it strictly."""
    with torch.device("meta"):
        module = cls_factory()
    missing_unexpected = module.load_state_dict(state_dict, strict=True, assign=True)
    assert not missing_unexpected.missing_keys and not missing_unexpected.unexpected_keys
    return module.eval()


OPEN_CLIP_PREFIX = "cond_stage_model.model."


def open_clip_twin(encoder: torch.nn.Module, sd: dict, prefix: str = OPEN_CLIP_PREFIX) -> torch.nn.Module:
    """transformers' CLIPTextModel loaded strictly from our FrozenOpenCLIPEmbedder's weights (`sd`, keys under
    `prefix`) via diffusers' own convert_open_clip_checkpoint: gelu, one layer fewer for `penultimate`."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    m = encoder.model
    config = CLIPTextConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.width,
        intermediate_size=4 * m.width,
        num_hidden_layers=encoder.n_blocks,
        num_attention_heads=m.heads,
        max_position_embeddings=m.context_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    with torch.device("meta"):
        twin = CLIPTextModel(config)
    dropped = f"{prefix}transformer.resblocks.{m.layers - 1}."
    if encoder.layer == "penultimate" and m.layers != 24:
        # diffusers' ignore list names block 23 (SD 2's last) literally; drop a shallow model's last block.
        sd = {k: v for k, v in sd.items() if not k.startswith(dropped)}
    converted = convert_open_clip_checkpoint(twin, sd, prefix=prefix)
    if encoder.layer == "penultimate":  # the converter itself dropped block 23 and the projection
        assert not any(".layers.23." in k or "text_projection" in k for k in converted)
    assert "text_model.final_layer_norm.weight" in converted  # ln_final is kept
    if not hasattr(twin, "text_model"):  # transformers >= 5.6 has no text_model level (as diffusers does)
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    result = twin.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    twin.embeddings.position_ids = torch.arange(m.context_length).expand(1, -1)  # non-persistent buffer
    return twin.eval()
