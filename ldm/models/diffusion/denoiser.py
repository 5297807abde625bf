"""Adapter from a CompVis model (eps or v prediction) to the samplers' denoiser contract D(x, sigma) -> x0.

Samplers work in the variance-exploding form x = x0 + sigma * eps with sigma = sqrt((1 - a_t) / a_t);
this is the one place where that form is translated to the model's discrete timesteps, input scaling and
parameterization (see ldm.models.diffusion.scalings), so every sampler, DDIM and PLMS included, works
unchanged with v models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldm.models.diffusion.parameterization import check_parameterization
from ldm.models.diffusion.scalings import get_scalings


class CompVisDenoiser(nn.Module):
    def __init__(self, model: nn.Module, quantize: bool = False, parameterization: str | None = None):
        super().__init__()
        self.inner_model = model
        # the model's own config decides; models without the attribute are CompVis eps models
        chosen = parameterization if parameterization is not None else getattr(model, "parameterization", "eps")
        self.parameterization = check_parameterization(chosen)
        ac = model.alphas_cumprod.detach().to(torch.float32)
        self.register_buffer("sigmas", ((1 - ac) / ac).sqrt(), persistent=False)
        self.register_buffer("log_sigmas", self.sigmas.log(), persistent=False)
        self.quantize = quantize  # snap to the nearest trained timestep instead of interpolating

    @property
    def num_timesteps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose log-sigma matches, by linear interpolation between trained steps."""
        log_sigma = sigma.to(self.log_sigmas.device, torch.float32).log()
        if self.quantize:
            return (log_sigma[:, None] - self.log_sigmas[None]).abs().argmin(dim=1).float()
        high = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        low = high - 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return low.float() + w

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=self.log_sigmas.device)
        low = t.floor().long().clamp(0, self.num_timesteps - 1)
        high = t.ceil().long().clamp(0, self.num_timesteps - 1)
        w = t - low.float()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        sigma = sigma.to(x.device, torch.float32)
        shape = (-1, *([1] * (x.dim() - 1)))
        c_skip, c_out, c_in = (
            c if isinstance(c, float) else c.view(shape).to(x.dtype) for c in get_scalings(self.parameterization, sigma)
        )
        t = self.sigma_to_t(sigma).to(x.device)
        out = self.inner_model.apply_model(x * c_in, t, cond)
        return x * c_skip + out.to(x.dtype) * c_out
