"""PLMS / PNDM (Liu et al. 2022) as in CompVis ``plms.py``, in VE form.

The noise estimate eps = (x - D) / sigma is extrapolated with Adams–Bashforth weights
over past steps (uniform in timestep index) and fed to the DDIM transfer
x_next = x + (sigma_next - sigma) * eps'. The first step has no history, so it uses
a pseudo improved-Euler (Heun) step costing a second model call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .common import Callback, Denoiser, NoiseSampler, report, sigma_batch, sigma_values, to_d


def transfer(x: Tensor, eps: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """DDIM transfer: keep x0 = x - sigma * eps and re-noise it to sigma_next."""
    return x + (sigma_next - sigma) * eps


def adams_bashforth(e_t: Tensor, past: list[Tensor]) -> Tensor:
    """AB2/3/4 extrapolation; ``past`` is newest last and non-empty."""
    if len(past) == 1:
        return (3 * e_t - past[-1]) / 2
    if len(past) == 2:
        return (23 * e_t - 16 * past[-1] + 5 * past[-2]) / 12
    return (55 * e_t - 59 * past[-1] + 37 * past[-2] - 9 * past[-3]) / 24


@torch.no_grad()
def sample_plms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Deterministic; ``denoised`` in the callback is x - sigma * eps' (CompVis' pred_x0)."""
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    past: list[Tensor] = []  # raw e_t of the last 3 steps, newest last
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        e_t = to_d(x, sigma, model(x, sigma_batch(x, sigma), **extra_args))
        if past:
            e_prime = adams_bashforth(e_t, past)
        elif sigma_next > 0:
            x_next = transfer(x, e_t, sigma, sigma_next)
            e_next = to_d(x_next, sigma_next, model(x_next, sigma_batch(x, sigma_next), **extra_args))
            e_prime = (e_t + e_next) / 2
        else:  # single-step schedule: eps at sigma = 0 is undefined, plain DDIM
            e_prime = e_t
        report(callback, x, i, sigma, x - sigma * e_prime)
        x = transfer(x, e_prime, sigma, sigma_next)
        past = (past + [e_t])[-3:]
    return x
