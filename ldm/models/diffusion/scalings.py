"""Preconditioning of a CompVis network in the VE form (Karras et al. 2022, table 1):
D(x; sigma) = c_skip * x + c_out * F(c_in * x, t(sigma)).

c_in = 1 / sqrt(sigma^2 + sigma_data^2) turns the VE sample x = x0 + sigma * eps back into the VP sample the
network was trained on (x_t = sqrt(a) x0 + sqrt(1 - a) eps with sigma^2 = (1 - a) / a, sigma_data = 1).
For eps, D = x - sigma * eps; for v, c_skip * x + c_out * v = sqrt(a) x_t - sqrt(1 - a) v = x0 (k-diffusion's
CompVisVDenoiser).
"""

from __future__ import annotations

from torch import Tensor

from ldm.models.diffusion.parameterization import check_parameterization

Scalings = tuple[Tensor | float, Tensor, Tensor]


def eps_scalings(sigma: Tensor, sigma_data: float = 1.0) -> Scalings:
    c_in = 1.0 / (sigma**2 + sigma_data**2).sqrt()
    return 1.0, -sigma, c_in


def v_scalings(sigma: Tensor, sigma_data: float = 1.0) -> Scalings:
    norm = (sigma**2 + sigma_data**2).sqrt()
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = -sigma * sigma_data / norm
    return c_skip, c_out, 1.0 / norm


def get_scalings(parameterization: str, sigma: Tensor, sigma_data: float = 1.0) -> Scalings:
    """(c_skip, c_out, c_in) for a batch of sigmas; c_skip is the float 1 for eps so D stays x - sigma * eps."""
    if check_parameterization(parameterization) == "v":
        return v_scalings(sigma, sigma_data)
    return eps_scalings(sigma, sigma_data)
