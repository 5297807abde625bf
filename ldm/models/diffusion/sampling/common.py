"""Shared pieces of the sampler contract.

Every sampler integrates the variance-exploding probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma  (Karras et al. 2022, eq. 3 with s(t) = 1),
where D is a denoiser returning the x0 estimate. ``x`` on entry is x_T = randn * sigmas[0].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

NoiseSampler = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict], None]


class Denoiser(Protocol):
    """Anything callable as ``model(x, sigma, **extra_args) -> x0 estimate``."""

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor: ...


def sigma_batch(x: Tensor, sigma: float) -> Tensor:
    """Shape-[batch] sigma for the model call.

    At least float32 even when x is float16: sigma -> t conversion in the
    denoiser is sensitive to the ~3 significant digits half precision keeps.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=dtype)


def sigma_values(sigmas: Tensor) -> list[float]:
    """Python floats for step-size arithmetic (one host sync instead of one per step)."""
    return sigmas.detach().to("cpu", torch.float64).tolist()


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """ODE slope dx/dsigma = (x - D) / sigma, which is also the VE noise estimate eps."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split sigma -> sigma_next into a deterministic move to sigma_down plus fresh noise sigma_up.

    sigma_down^2 + sigma_up^2 = sigma_next^2, so the marginal noise level is right;
    eta = 1 gives the DDPM posterior variance, eta = 0 no noise (DDIM / Euler).
    """
    if sigma_next == 0.0 or eta == 0.0:
        return sigma_next, 0.0
    posterior = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
    sigma_up = min(sigma_next, eta * math.sqrt(max(posterior, 0.0)))
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def default_noise_sampler(x: Tensor, generator: torch.Generator) -> NoiseSampler:
    """Seeded unit noise like ``x``, drawn on the CPU so a seed gives the same image on any device."""

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
        return noise.to(device=x.device, dtype=x.dtype)

    return sample


def fresh_noise(noise_sampler: NoiseSampler | None, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """Unit noise for one step; the unseeded fallback is only for callers that do not care about seeds."""
    if noise_sampler is None:
        return torch.randn_like(x)
    return noise_sampler(sigma, sigma_next)


def report(
    callback: Callback | None, x: Tensor, i: int, sigma: float, denoised: Tensor, sigma_hat: float | None = None
) -> None:
    """Per-step callback with the state at the *start* of step i."""
    if callback is not None:
        callback(
            {
                "x": x,
                "i": i,
                "sigma": sigma,
                "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                "denoised": denoised,
            }
        )
