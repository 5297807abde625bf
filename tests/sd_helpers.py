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
