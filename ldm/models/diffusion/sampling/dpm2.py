"""DPM-Solver-2 (Lu et al. 2022, Alg. 1 with r = 1/2) in Karras' sigma form, plus ancestral variant.

The midpoint is taken in log-sigma, the natural time variable of the exponential integrator.
"""

from __future__ import annotations

import math

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


def log_midpoint(sigma: float, sigma_next: float) -> float:
    """exp of the mean of log sigmas, i.e. the geometric mean."""
    return math.exp((math.log(sigma) + math.log(sigma_next)) / 2)


def dpm2_step(model: Denoiser, x: Tensor, d: Tensor, sigma: float, sigma_next: float, extra_args: dict) -> Tensor:
    """Move x from sigma to sigma_next using the slope at the log-midpoint.

    Falls back to Euler when sigma_next = 0 (log 0 has no midpoint).
    """
    if sigma_next == 0:
        return x + d * (sigma_next - sigma)
    sigma_mid = log_midpoint(sigma, sigma_next)
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_batch(x, sigma_mid), **extra_args))
    return x + d_mid * (sigma_next - sigma)


@torch.no_grad()
def sample_dpm_2(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Deterministic second-order midpoint method; two model calls per step except the last."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        denoised = model(x, sigma_batch(x, sig[i]), **extra_args)
        report(callback, x, i, sig[i], denoised)
        x = dpm2_step(model, x, to_d(x, sig[i], denoised), sig[i], sig[i + 1], extra_args)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    *,
    eta: float = 1.0,
) -> Tensor:
    """DPM-2 step down to sigma_down, then fresh noise of size sigma_up (seed via ``noise_sampler``)."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        denoised = model(x, sigma_batch(x, sig[i]), **extra_args)
        report(callback, x, i, sig[i], denoised)
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = dpm2_step(model, x, to_d(x, sig[i], denoised), sig[i], sigma_down, extra_args)
        if sigma_up > 0:
            x = x + fresh_noise(noise_sampler, x, sigmas[i], sigmas[i + 1]) * sigma_up
    return x
