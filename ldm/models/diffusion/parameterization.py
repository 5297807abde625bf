"""What the UNet predicts: "eps" (the noise, SD 1.x and 2.x-512) or "v" (SD 2.x-768, Salimans & Ho 2022).

With x_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alpha_bar_t), v = sqrt(a) eps - sqrt(1 - a) x0. Nothing in a
checkpoint says which one a model predicts; the config's `parameterization` decides. Samplers never see v:
the denoiser (ldm.models.diffusion.denoiser) turns either into an x0 estimate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ldm.errors import ConfigError

PARAMETERIZATIONS = ("eps", "v")


def check_parameterization(value: object) -> str:
    """`value` if it is a known parameterization, else a one-line ConfigError naming the key and choices."""
    if value not in PARAMETERIZATIONS:
        raise ConfigError(
            f"model.params.parameterization {value!r} is unknown; choose one of: {', '.join(PARAMETERIZATIONS)} "
            "(eps for SD 1.x and 2.x-512, v for the SD 2.x 768-v models)"
        )
    return str(value)


def _per_sample(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped [B, 1, ..., 1] to broadcast against `like`, in its dtype and device."""
    picked = values.to(like.device)[t.to(like.device).long()]
    return picked.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def v_target(x0: Tensor, noise: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """The velocity a v model is trained to predict: sqrt(a_t) eps - sqrt(1 - a_t) x0."""
    a = _per_sample(alphas_cumprod, t, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def training_target(parameterization: str, x0: Tensor, noise: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """What the UNet output is compared with in the diffusion loss: the noise for eps, v for v."""
    if check_parameterization(parameterization) == "v":
        return v_target(x0, noise, alphas_cumprod, t)
    return noise


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The noise implied by a v prediction at the VP sample x_t: sqrt(a) v + sqrt(1 - a) x_t."""
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return a.sqrt() * v + (1 - a).sqrt() * x_t


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The clean sample implied by a v prediction at the VP sample x_t: sqrt(a) x_t - sqrt(1 - a) v."""
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return a.sqrt() * x_t - (1 - a).sqrt() * v
