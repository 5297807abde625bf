"""Euler samplers (Karras et al. 2022, Alg. 2 without churn, and its ancestral variant)."""

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
def sample_euler(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """First-order explicit Euler on the probability-flow ODE; deterministic."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        denoised = model(x, sigma_batch(x, sig[i]), **extra_args)
        report(callback, x, i, sig[i], denoised)
        x = x + to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    *,
    eta: float = 1.0,
) -> Tensor:
    """Euler step down to sigma_down, then add fresh noise of size sigma_up.

    Pass a seeded ``noise_sampler`` (see ``default_noise_sampler``) for reproducible output.
    """
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        denoised = model(x, sigma_batch(x, sig[i]), **extra_args)
        report(callback, x, i, sig[i], denoised)
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = x + to_d(x, sig[i], denoised) * (sigma_down - sig[i])
        if sigma_up > 0:
            x = x + fresh_noise(noise_sampler, x, sigmas[i], sigmas[i + 1]) * sigma_up
    return x
