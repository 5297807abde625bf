"""Diagonal Gaussian posterior of the KL autoencoder."""

from __future__ import annotations

import torch


class DiagonalGaussianDistribution:
    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        # Clamp as the SD VAE does, so exp() never overflows on untrained or extreme inputs.
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)
        self.var = self.std**2

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z = mean + std * n; with a CPU generator the draw is reproducible on any device."""
        noise = torch.randn(
            self.mean.shape,
            generator=generator,
            dtype=torch.float32,
            device=generator.device if generator is not None else self.mean.device,
        )
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return 0.5 * torch.sum(self.mean**2 + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
