"""Glue from conditioning to latents: denoiser adapter + guidance + a named sampler + seeded noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ldm.errors import ConfigError
from ldm.models.diffusion.denoiser import CompVisDenoiser
from ldm.models.diffusion.guidance import CFGDenoiser, Cond, cond_device
from ldm.models.diffusion.sampling import default_noise_sampler, get_sampler, make_sigmas
from ldm.validate import int_in_range


def initial_noise(
    shape: Sequence[int], generator: torch.Generator, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Unit noise drawn on the CPU so one seed gives one image on every device."""
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


MAX_STEPS = 1000


def check_steps(steps: int, name: str = "steps") -> int:
    """Steps as an int in [1, MAX_STEPS], or a ConfigError naming `name` (e.g. "--ddim_steps")."""
    return int_in_range(name, steps, 1, MAX_STEPS)


def sampler_step_count(model: nn.Module, sampler: str, steps: int, karras: bool = False) -> int:
    """How many steps a sampler will take (ddim/plms round to the CompVis timestep spacing)."""
    check_steps(steps)
    return len(make_sigmas(get_sampler(sampler), CompVisDenoiser(model), steps, karras=karras)) - 1


def img2img_steps(total_steps: int, strength: float) -> int:
    """Denoising steps img2img runs: round(strength x steps); strength must lie in (0, 1]."""
    if not 0.0 < float(strength) <= 1.0:
        raise ConfigError(
            f"strength {strength} is outside (0, 1]; use e.g. 0.75 (higher = further from the init image)"
        )
    return int(round(float(strength) * total_steps))


@torch.no_grad()
def sample_latents(
    model: nn.Module,
    cond: Cond,
    uncond: Cond | None,
    *,
    shape: Sequence[int],
    generator: torch.Generator,
    sampler: str = "ddim",
    steps: int = 50,
    cfg_scale: float = 7.5,
    eta: float | None = None,
    karras: bool = False,
    callback: Callable[[dict], None] | None = None,
    denoiser: CompVisDenoiser | None = None,
    init_latent: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Sample SD latents of `shape` [B, C, H/8, W/8] for `cond` (and `uncond` for guidance): contexts, or
    the conditioner's dicts ({"crossattn"}, and "vector" for SDXL), both of one kind.

    img2img: with `init_latent`, only the last round(strength x n) steps run, starting from the init
    latent noised to that step's sigma; strength 1 starts from pure noise, strength ~0 returns it as is.
    """
    spec = get_sampler(sampler)
    check_steps(steps)
    device = cond_device(cond)
    denoiser = denoiser if denoiser is not None else CompVisDenoiser(model).to(device)
    sigmas = make_sigmas(spec, denoiser, steps, karras=karras).to(device)
    noise = initial_noise(shape, generator, device)
    if init_latent is not None:
        sigmas = sigmas[len(sigmas) - 1 - img2img_steps(len(sigmas) - 1, strength) :]
        if len(sigmas) == 1:  # nothing to denoise
            return init_latent.to(device=device, dtype=torch.float32).expand(shape).clone()
        x = init_latent.to(device=device, dtype=torch.float32) + noise * sigmas[0]
    else:
        x = noise * sigmas[0]
    options = {"eta": eta} if eta is not None and "eta" in spec.options else {}
    extra_args = {"cond": cond, "uncond": uncond, "cond_scale": cfg_scale}
    return spec.fn(
        CFGDenoiser(denoiser),
        x,
        sigmas,
        extra_args=extra_args,
        callback=callback,
        noise_sampler=default_noise_sampler(x, generator),
        **options,
    )
