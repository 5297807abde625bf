"""Sampler registry: one name -> (function, default discretisation) for the txt2img scripts.

All samplers share the contract of ``common``: ``fn(model, x, sigmas, extra_args, callback,
noise_sampler, **options) -> x0`` with a VE denoiser ``model(x, sigma) -> x0 estimate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ldm.errors import ConfigError

from .common import Denoiser, ancestral_step, default_noise_sampler, to_d
from .ddim import sample_ddim
from .dpm2 import sample_dpm_2, sample_dpm_2_ancestral
from .dpmpp import sample_dpmpp_2m
from .euler import sample_euler, sample_euler_ancestral
from .heun import sample_heun
from .lms import lms_coefficients, sample_lms
from .plms import sample_plms
from .schedules import ddim_timesteps, get_sigmas_ddim, get_sigmas_karras, get_sigmas_uniform

DISCRETISATIONS = ("uniform", "ddim")


class UnknownSamplerError(ConfigError):
    """Raised for a sampler name that is not in ``SAMPLERS``."""


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable[..., Tensor]
    discretisation: str  # default sigmas: "uniform" (continuous t) or "ddim" (CompVis timesteps)
    is_ancestral: bool  # draws fresh noise every step, so output depends on noise_sampler
    description: str
    options: tuple[str, ...] = ()  # keyword options fn accepts; anything else is a TypeError


def _spec(
    name: str,
    fn: Callable[..., Tensor],
    discretisation: str,
    is_ancestral: bool,
    description: str,
    options: tuple[str, ...] = (),
) -> tuple[str, SamplerSpec]:
    assert discretisation in DISCRETISATIONS, discretisation
    return name, SamplerSpec(name, fn, discretisation, is_ancestral, description, options)


SAMPLERS: dict[str, SamplerSpec] = dict(
    [
        _spec("ddim", sample_ddim, "ddim", False, "DDIM; eta > 0 adds noise (eta=1 is DDPM-like)", ("eta",)),
        _spec("plms", sample_plms, "ddim", False, "pseudo linear multistep (PNDM), CompVis default"),
        _spec("k_euler", sample_euler, "uniform", False, "Euler on the probability-flow ODE"),
        _spec("k_euler_a", sample_euler_ancestral, "uniform", True, "Euler ancestral", ("eta",)),
        _spec("k_heun", sample_heun, "uniform", False, "Heun 2nd order, 2 model calls per step"),
        _spec("k_lms", sample_lms, "uniform", False, "linear multistep in sigma", ("order",)),
        _spec("k_dpm_2", sample_dpm_2, "uniform", False, "DPM-Solver-2, 2 model calls per step"),
        _spec("k_dpm_2_a", sample_dpm_2_ancestral, "uniform", True, "DPM-Solver-2 ancestral", ("eta",)),
        _spec("k_dpmpp_2m", sample_dpmpp_2m, "uniform", False, "DPM-Solver++(2M) multistep"),
    ]
)


def get_sampler(name: str) -> SamplerSpec:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise UnknownSamplerError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


def make_sigmas(spec: SamplerSpec, denoiser: Any, steps: int, karras: bool = False) -> Tensor:
    """Sigmas for ``steps`` steps in the sampler's default discretisation; ``karras`` overrides it."""
    if karras:
        return get_sigmas_karras(
            steps, float(denoiser.sigma_min), float(denoiser.sigma_max), device=denoiser.sigmas.device
        )
    if spec.discretisation == "ddim":
        return get_sigmas_ddim(denoiser, steps)
    return get_sigmas_uniform(denoiser, steps)


__all__ = [
    "DISCRETISATIONS",
    "Denoiser",
    "SAMPLERS",
    "SamplerSpec",
    "UnknownSamplerError",
    "ancestral_step",
    "ddim_timesteps",
    "default_noise_sampler",
    "get_sampler",
    "get_sigmas_ddim",
    "get_sigmas_karras",
    "get_sigmas_uniform",
    "lms_coefficients",
    "make_sigmas",
    "sample_ddim",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
    "sample_plms",
    "to_d",
]
