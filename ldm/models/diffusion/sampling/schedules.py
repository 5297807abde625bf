"""Noise-level discretisations: decreasing float32 sigmas with a final 0 appended.

The trailing 0 makes the last step land on the clean-data estimate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _check_steps(n: int) -> None:
    if n < 1:
        raise ValueError(f"need at least 1 sampling step, got {n}")


def get_sigmas_uniform(denoiser: Any, n: int) -> Tensor:
    """n steps evenly spaced in training time t from t_max to 0 (continuous, interpolated sigma)."""
    _check_steps(n)
    t_max = len(denoiser.sigmas) - 1
    t = torch.linspace(t_max, 0, n, device=denoiser.sigmas.device)
    return append_zero(denoiser.t_to_sigma(t).to(torch.float32))


def ddim_timesteps(num_train_timesteps: int, n: int) -> Tensor:
    """CompVis ``make_ddim_timesteps(method="uniform")``, descending.

    Like CompVis, the count is ceil(T / (T // n)), i.e. n only when n divides T
    (e.g. T=1000, n=30 gives 31 steps). The +1 shift is CompVis' alignment with
    alphas_cumprod; the clip only matters for n > T/2 where CompVis would index past the end.
    """
    _check_steps(n)
    if n > num_train_timesteps:
        raise ValueError(f"at most {num_train_timesteps} DDIM steps, got {n}")
    c = num_train_timesteps // n
    steps = (torch.arange(0, num_train_timesteps, c) + 1).clamp(max=num_train_timesteps - 1)
    return torch.unique(steps).flip(0)  # unique: clipping can duplicate T-1


def get_sigmas_ddim(denoiser: Any, n: int) -> Tensor:
    """Sigmas at the CompVis DDIM/PLMS timesteps (the exact training noise levels)."""
    steps = ddim_timesteps(len(denoiser.sigmas), n).to(denoiser.sigmas.device)
    return append_zero(denoiser.sigmas[steps].to(torch.float32))


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: torch.device | str = "cpu"
) -> Tensor:
    """Karras et al. 2022 eq. 5: uniform steps in sigma^(1/rho), denser near sigma_min for rho > 1."""
    _check_steps(n)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_max, inv_min = float(sigma_max) ** (1 / rho), float(sigma_min) ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return append_zero(sigmas.to(device=device, dtype=torch.float32))
