"""DDIM (Song et al. 2021) rewritten for the VE denoiser.

With x_ve = x_vp / sqrt(alpha_bar) and sigma^2 = (1 - alpha_bar) / alpha_bar, CompVis'
DDIM update with eta becomes an Euler step to sigma_down plus noise sigma_up (see
``common.ancestral_step``); eta = 0 is plain Euler, i.e. deterministic DDIM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .common import (
    Callback,
    Denoiser,
    NoiseSampler,
    ancestral_step,
    fresh_noise,
    report,
    sigma_batch,
    sigma_values,
    to_d,
)


@torch.no_grad()
def sample_ddim(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    *,
    eta: float = 0.0,
) -> Tensor:
    """Deterministic for eta = 0; for eta > 0 pass a seeded ``noise_sampler`` to reproduce."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        sigma = sig[i]
        denoised = model(x, sigma_batch(x, sigma), **extra_args)
        report(callback, x, i, sigma, denoised)
        eps = to_d(x, sigma, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sig[i + 1], eta)
        # x0 + sigma_down * eps, written as a step so x0 is not re-derived
        x = x + eps * (sigma_down - sigma)
        if sigma_up > 0:
            x = x + fresh_noise(noise_sampler, x, sigmas[i], sigmas[i + 1]) * sigma_up
    return x
