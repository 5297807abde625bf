"""Linear multistep sampler on the probability-flow ODE (Adams–Bashforth with variable steps).

The slope history d_i, d_{i-1}, ... is interpolated by a Lagrange polynomial in sigma and
integrated exactly over [sigma_i, sigma_{i+1}]; no quadrature error, so no scipy needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from numpy.polynomial import Polynomial
from torch import Tensor

from .common import Callback, Denoiser, NoiseSampler, report, sigma_batch, sigma_values, to_d


def lagrange_basis(nodes: Sequence[float], j: int) -> Polynomial:
    """l_j(s): 1 at nodes[j], 0 at every other node."""
    others = [s for k, s in enumerate(nodes) if k != j]
    poly = Polynomial.fromroots(others) if others else Polynomial([1.0])
    return poly / poly(nodes[j])


def lms_coefficients(sigmas: Sequence[float], i: int, order: int) -> list[float]:
    """Weights c_j with x_{i+1} = x_i + sum_j c_j * d_{i-j}, j = 0..order-1.

    c_j = integral of l_j over [sigma_i, sigma_{i+1}] with nodes sigma_i, ..., sigma_{i-order+1}.
    """
    if not 1 <= order <= i + 1:
        raise ValueError(f"order {order} needs {order} past slopes, step {i} has {i + 1}")
    nodes = [float(sigmas[i - j]) for j in range(order)]
    lo, hi = float(sigmas[i]), float(sigmas[i + 1])
    coeffs = []
    for j in range(order):
        antiderivative = lagrange_basis(nodes, j).integ()
        coeffs.append(float(antiderivative(hi) - antiderivative(lo)))
    return coeffs


@torch.no_grad()
def sample_lms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    *,
    order: int = 4,
) -> Tensor:
    """One model call per step; the first steps use the lower orders that history allows."""
    if order < 1:
        raise ValueError(f"LMS order must be >= 1, got {order}")
    extra_args = extra_args or {}
    sig = sigma_values(sigmas)
    slopes: list[Tensor] = []  # newest last, at most `order` kept
    for i in range(len(sig) - 1):
        denoised = model(x, sigma_batch(x, sig[i]), **extra_args)
        report(callback, x, i, sig[i], denoised)
        slopes = (slopes + [to_d(x, sig[i], denoised)])[-order:]
        coeffs = lms_coefficients(sig, i, len(slopes))
        x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes)))
    return x
