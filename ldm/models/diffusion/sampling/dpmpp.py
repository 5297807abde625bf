"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), multistep data-prediction solver.

In lambda = -log sigma the VE ODE is solved exactly for a constant x0 estimate D:
x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) D. 2M replaces D by a linear
extrapolation from the previous step's estimate, for second order at one model call per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .common import Callback, Denoiser, NoiseSampler, report, sigma_batch, sigma_values


def lambda_of(sigma: float) -> float:
    """Half log-SNR in the VE form (data scale 1): lambda = -log sigma."""
    return -math.log(sigma)


def second_order_estimate(denoised: Tensor, denoised_prev: Tensor, h: float, h_prev: float) -> Tensor:
    """D_i + (D_i - D_{i-1}) / (2 r), r = h_prev / h: the data estimate at the step's midpoint."""
    r = h_prev / h
    return denoised + (denoised - denoised_prev) / (2 * r)


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """First step and the step to sigma = 0 are first order (no history / infinite h)."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    denoised_prev: Tensor | None = None
    h_prev = 0.0
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = model(x, sigma_batch(x, sigma), **extra_args)
        report(callback, x, i, sigma, denoised)
        if sigma_next == 0:
            x = denoised  # limit of the update below as sigma_next -> 0
            continue
        h = lambda_of(sigma_next) - lambda_of(sigma)
        estimate = denoised
        if denoised_prev is not None:
            estimate = second_order_estimate(denoised, denoised_prev, h, h_prev)
        ratio = sigma_next / sigma
        x = ratio * x + (1 - ratio) * estimate
        denoised_prev, h_prev = denoised, h
    return x
