"""AutoencoderKL: the first stage that maps images to SD latents and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ldm.modules.diffusionmodules.model import Decoder, Encoder
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution


class AutoencoderKL(nn.Module):
    """Frozen VAE of Stable Diffusion. Training the VAE is out of scope, so `lossconfig` is accepted and ignored."""

    def __init__(self, ddconfig: Mapping[str, Any], embed_dim: int, lossconfig: Mapping | None = None, **ignored):
        super().__init__()
        if not ddconfig.get("double_z", True):
            raise ValueError(
                "AutoencoderKL: ddconfig.double_z must be true (the encoder predicts mean and log-variance)"
            )
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        z = ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
        self.embed_dim = embed_dim

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """Image in [-1, 1], shape [B, 3, H, W] -> posterior over latents [B, embed_dim, H/8, W/8]."""
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True) -> torch.Tensor:
        posterior = self.encode(x)
        return self.decode(posterior.sample() if sample_posterior else posterior.mode())
