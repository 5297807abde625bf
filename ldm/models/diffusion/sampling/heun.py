"""Heun's second-order sampler (Karras et al. 2022, Alg. 1 without churn)."""

from __future__ import annotations

import torch
from torch import Tensor

from .common import Callback, Denoiser, NoiseSampler, report, sigma_batch, sigma_values, to_d


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Trapezoidal predictor-corrector: two model calls per step except the last.

    The step to sigma = 0 stays Euler because the slope (x - D) / sigma is undefined at 0.
    """
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = model(x, sigma_batch(x, sigma), **extra_args)
        report(callback, x, i, sigma, denoised)
        d = to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        x_euler = x + d * dt
        if sigma_next == 0:
            x = x_euler
            continue
        d_next = to_d(x_euler, sigma_next, model(x_euler, sigma_batch(x, sigma_next), **extra_args))
        x = x + (d + d_next) / 2 * dt
    return x
