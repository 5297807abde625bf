"""SDXL's size conditioning: sgm's ConcatTimestepEmbedderND, a parameter-free Fourier embedding per number.

Each number (an original size, a crop corner, a target size: (height, width) or (top, left) pairs) gets
the sinusoidal timestep embedding of width `outdim` (256 in SDXL), cos half first (sgm's
`timestep_embedding`; diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`), and
the embeddings of one row are concatenated: [B, 2] -> [B, 2 * outdim].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ldm.errors import ConfigError

MAX_PERIOD = 10000


def fourier_embedding(values: torch.Tensor, dim: int, max_period: int = MAX_PERIOD) -> torch.Tensor:
    """[N] numbers -> [N, dim] as cat(cos(v * f), sin(v * f)), f_k = max_period^(-k / (dim/2)), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:  # as sgm: an odd width gets a zero column
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class ConcatTimestepEmbedderND(nn.Module):
    """[B, d] numbers (or [B]) -> [B, d * outdim]; no parameters, so nothing in a checkpoint."""

    def __init__(self, outdim: int = 256):
        super().__init__()
        if isinstance(outdim, bool) or not isinstance(outdim, int) or outdim < 1:
            raise ConfigError(f"ConcatTimestepEmbedderND outdim={outdim!r}; give a positive integer (SDXL: 256)")
        self.outdim = outdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            x = x[:, None]
        b, d = x.shape
        return fourier_embedding(x.reshape(b * d), self.outdim).reshape(b, d * self.outdim)
