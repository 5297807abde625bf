"""Tests for ldm.models.diffusion.sampling against an analytic Gaussian denoiser.

Data x0 ~ N(MU, S^2) per element, so D(x, sigma) and the probability-flow ODE solution
are known in closed form; every error below is measured against the exact answer.
Figures in comments were observed with torch 2.13 CPU, float64 x.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from ldm.models.diffusion.sampling import (
    SAMPLERS,
    UnknownSamplerError,
    ddim_timesteps,
    default_noise_sampler,
    get_sampler,
    get_sigmas_ddim,
    get_sigmas_karras,
    get_sigmas_uniform,
    lms_coefficients,
    make_sigmas,
    sample_euler,
    sample_lms,
    sample_plms,
)

MU, S = 0.3, 0.5
T = 1000
DETERMINISTIC = ["k_euler", "k_heun", "k_lms", "k_dpm_2", "k_dpmpp_2m", "ddim", "plms"]


class StandInSchedule:
    """Same attributes as the real denoiser wrapper, with the SD v1 beta schedule."""

    def __init__(self) -> None:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().float()
        self.log_sigmas = self.sigmas.double().log()
        self.num_timesteps = T
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        lo = t.floor().long().clamp(0, T - 2)
        w = t - lo
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]).exp().float()


class GaussianDenoiser:
    """Exact D(x, sigma) = (x S^2 + MU sigma^2) / (S^2 + sigma^2); counts model calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        s2 = sigma.view(-1, *[1] * (x.ndim - 1)).to(x.dtype) ** 2
        return (x * S**2 + MU * s2) / (S**2 + s2)


def exact_ode(x_T: torch.Tensor, sigma_T: float, sigma: float) -> torch.Tensor:
    return MU + (x_T - MU) * math.sqrt(S**2 + sigma**2) / math.sqrt(S**2 + sigma_T**2)


SCHED = StandInSchedule()


def start(sigmas: torch.Tensor, shape=(64, 16), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * float(sigmas[0])


def run(name: str, sigmas: torch.Tensor, x: torch.Tensor, **kw) -> tuple[torch.Tensor, list[dict]]:
    steps: list[dict] = []
    out = get_sampler(name).fn(GaussianDenoiser(), x, sigmas, callback=steps.append, **kw)
    return out, steps


# ---------------------------------------------------------------- deterministic accuracy

# max |error| at the endpoint after 50 steps of the default discretisation; observed:
# euler 8.3e-2, ddim 7.8e-2, dpmpp_2m 6.8e-2 (uniform-t has one huge last log-sigma step),
# dpm_2 1.3e-2, plms 5.3e-3, lms 6.0e-4, heun 2.8e-4. A wrong sign or factor gives O(1).
END_TOL = {
    "k_euler": 0.12,
    "ddim": 0.12,
    "k_dpmpp_2m": 0.1,
    "k_dpm_2": 0.03,
    "plms": 0.01,
    "k_lms": 3e-3,
    "k_heun": 3e-3,
}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_sampler_reaches_exact_ode_endpoint(name):
    sigmas = make_sigmas(get_sampler(name), SCHED, 50)
    x_T = start(sigmas)
    out, _ = run(name, sigmas, x_T)
    err = (out - exact_ode(x_T, float(sigmas[0]), 0.0)).abs().max().item()
    assert err < END_TOL[name]


# Error ratio when steps double (20->40, 40->80), measured at the last nonzero sigma via
# the callback: the final jump to sigma=0 is first order for most samplers and puts a
# ~2.6e-3 floor on the endpoint error that would hide the order. Karras steps, observed:
# euler/ddim 2.01, 2.00; heun 4.36, 4.17; dpm_2 4.34, 4.16; dpmpp_2m 4.38, 4.22;
# plms 4.62, 4.22; lms (order 4, low-order start-up) 11.6, 13.5.
ORDER_RATIO = {
    "k_euler": (1.8, 2.3),
    "ddim": (1.8, 2.3),
    "k_heun": (3.5, 5.0),
    "k_dpm_2": (3.5, 5.0),
    "k_dpmpp_2m": (3.5, 5.0),
    "plms": (3.5, 5.0),
    "k_lms": (8.0, 20.0),
}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_error_shrinks_at_expected_order(name):
    errors = []
    for n in (20, 40, 80):
        sigmas = make_sigmas(get_sampler(name), SCHED, n, karras=True)
        x_T = start(sigmas)
        _, steps = run(name, sigmas, x_T)
        last = steps[-1]
        errors.append((last["x"] - exact_ode(x_T, float(sigmas[0]), last["sigma"])).abs().max().item())
    lo, hi = ORDER_RATIO[name]
    for coarse, fine in zip(errors, errors[1:]):
        assert lo < coarse / fine < hi, errors


def test_lms_order_one_is_euler():
    sigmas = get_sigmas_uniform(SCHED, 12)
    x = start(sigmas)
    assert torch.allclose(
        sample_lms(GaussianDenoiser(), x, sigmas, order=1),
        sample_euler(GaussianDenoiser(), x, sigmas),
        rtol=0,
        atol=1e-12,
    )


# ---------------------------------------------------------------- CompVis VP equivalence


def test_ddim_step_matches_compvis_vp_update():
    """One VE step equals CompVis' DDIM update on x_vp = x_ve * sqrt(alpha_bar)."""
    t, t_prev, eta = 500, 480, 0.7
    a, a_prev = SCHED.alphas_cumprod[t].item(), SCHED.alphas_cumprod[t_prev].item()
    sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
    x_ve = start(torch.tensor([sigma]), seed=3)
    noise = torch.randn(x_ve.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    eps = (x_ve - GaussianDenoiser()(x_ve, torch.full((64,), sigma, dtype=torch.float64))) / sigma
    x_vp = x_ve * math.sqrt(a)
    pred_x0 = (x_vp - math.sqrt(1 - a) * eps) / math.sqrt(a)
    sigma_t = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    x_prev_vp = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev - sigma_t**2) * eps + sigma_t * noise

    sigmas = torch.tensor([sigma, sigma_prev, 0.0], dtype=torch.float64)
    _, steps = run("ddim", sigmas, x_ve, eta=eta, noise_sampler=lambda s, sn: noise)
    assert torch.allclose(steps[1]["x"], x_prev_vp / math.sqrt(a_prev), rtol=0, atol=1e-10)


def compvis_plms_reference(x_ve: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """PLMS written in CompVis' VP variables (alpha_bar = 1 / (1 + sigma^2)), for comparison."""
    alpha = [1 / (1 + s**2) for s in sigmas.tolist()]
    model = GaussianDenoiser()

    def eps_at(x_vp, k):
        x, sigma = x_vp / math.sqrt(alpha[k]), float(sigmas[k])
        return (x - model(x, torch.full((x.shape[0],), sigma, dtype=torch.float64))) / sigma

    def x_prev(x_vp, e, k):
        x0 = (x_vp - math.sqrt(1 - alpha[k]) * e) / math.sqrt(alpha[k])
        return math.sqrt(alpha[k + 1]) * x0 + math.sqrt(1 - alpha[k + 1]) * e

    x_vp, old = x_ve * math.sqrt(alpha[0]), []
    for k in range(len(sigmas) - 1):
        e = eps_at(x_vp, k)
        if not old:
            e_prime = (e + eps_at(x_prev(x_vp, e, k), k + 1)) / 2
        elif len(old) == 1:
            e_prime = (3 * e - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x_vp, old = x_prev(x_vp, e_prime, k), old + [e]
    return x_vp  # alpha_bar = 1 at sigma = 0, so VP and VE coincide


def test_plms_matches_compvis_vp_formulation():
    sigmas = get_sigmas_ddim(SCHED, 10)
    x = start(sigmas)
    expected = compvis_plms_reference(x, sigmas)
    assert torch.allclose(sample_plms(GaussianDenoiser(), x, sigmas), expected, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- ancestral statistics


# 200 Karras steps, 32768 samples; observed mean/std: k_euler_a 0.296/0.491,
# ddim eta=1 0.296/0.491 (same update), k_dpm_2_a 0.296/0.500. First-order ancestral
# samplers are biased low in std (0.45 at 50 steps); SE of the mean is 0.003.
@pytest.mark.parametrize("name,options", [("k_euler_a", {}), ("k_dpm_2_a", {}), ("ddim", {"eta": 1.0})])
def test_ancestral_sampler_reproduces_data_moments(name, options):
    sigmas = make_sigmas(get_sampler(name), SCHED, 200, karras=True)
    x = start(sigmas, shape=(32, 1024), seed=100)
    noise = default_noise_sampler(x, torch.Generator().manual_seed(0))
    out, _ = run(name, sigmas, x, noise_sampler=noise, **options)
    assert abs(out.mean().item() - MU) < 0.01
    assert abs(out.std().item() - S) < 0.025 * S


@pytest.mark.parametrize("name,options", [("k_euler_a", {}), ("k_dpm_2_a", {}), ("ddim", {"eta": 1.0})])
def test_noise_seed_controls_ancestral_output(name, options):
    sigmas = make_sigmas(get_sampler(name), SCHED, 10)
    x = start(sigmas)

    def sample(seed):
        noise = default_noise_sampler(x, torch.Generator().manual_seed(seed))
        return run(name, sigmas, x, noise_sampler=noise, **options)[0]

    assert torch.equal(sample(1), sample(1))
    assert (sample(1) - sample(2)).abs().max() > 0.01


def test_default_noise_sampler_follows_x_and_seed():
    x = torch.zeros(2, 3, dtype=torch.float64)
    noise = default_noise_sampler(x, torch.Generator().manual_seed(7))(torch.tensor(1.0), torch.tensor(0.5))
    expected = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    assert noise.dtype == torch.float64 and noise.device == x.device
    assert torch.equal(noise, expected.double())


# ---------------------------------------------------------------- contract


# model calls for n steps: two-stage methods skip the second call on the step to 0,
# PLMS pays one extra call on its first step.
def expected_calls(name: str, n: int) -> int:
    return {"k_heun": 2 * n - 1, "k_dpm_2": 2 * n - 1, "k_dpm_2_a": 2 * n - 1, "plms": n + 1}.get(name, n)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_once_per_step_with_documented_keys(name):
    n = 5  # divides 1000, so the CompVis DDIM timesteps number exactly n
    sigmas = make_sigmas(get_sampler(name), SCHED, n)
    x = start(sigmas).float()
    model, steps = GaussianDenoiser(), []
    noise = default_noise_sampler(x, torch.Generator().manual_seed(0))
    out = get_sampler(name).fn(model, x, sigmas, callback=steps.append, noise_sampler=noise)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert [s["i"] for s in steps] == list(range(n))
    assert all(set(s) == {"x", "i", "sigma", "sigma_hat", "denoised"} for s in steps)
    assert [s["sigma"] for s in steps] == pytest.approx(sigmas[:-1].tolist())
    assert all(s["sigma_hat"] == s["sigma"] and s["denoised"].shape == x.shape for s in steps)
    assert model.calls == expected_calls(name, n)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_spec_options_match_function_signature(name):
    spec = get_sampler(name)
    params = inspect.signature(spec.fn).parameters.values()
    assert spec.options == tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
    assert spec.name == name and spec.discretisation in ("uniform", "ddim")


def test_unknown_sampler_lists_choices():
    with pytest.raises(UnknownSamplerError) as info:
        get_sampler("foo")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "'foo'" in message and "\n" not in message
    assert all(name in message for name in SAMPLERS)


# ---------------------------------------------------------------- discretisations


def assert_valid_sigmas(sigmas: torch.Tensor, length: int) -> None:
    assert sigmas.dtype == torch.float32 and sigmas.shape == (length,)
    assert sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("n", [1, 7, 50])
def test_uniform_sigmas(n):
    sigmas = get_sigmas_uniform(SCHED, n)
    assert_valid_sigmas(sigmas, n + 1)
    assert sigmas[0] == pytest.approx(float(SCHED.sigma_max))
    if n > 1:
        assert sigmas[-2] == pytest.approx(float(SCHED.sigma_min))


def test_uniform_sigmas_hit_the_table_at_integer_t():
    assert torch.allclose(get_sigmas_uniform(SCHED, T)[:-1], SCHED.sigmas.flip(0), rtol=1e-6)


def test_ddim_sigmas_use_compvis_timesteps():
    assert ddim_timesteps(T, 50).tolist() == list(range(981, 0, -20))
    sigmas = get_sigmas_ddim(SCHED, 50)
    assert_valid_sigmas(sigmas, 51)
    assert torch.equal(sigmas[:-1], SCHED.sigmas[list(range(981, 0, -20))])
    # CompVis quirk kept on purpose: 1000 // 30 = 33 gives 31 timesteps, not 30
    assert_valid_sigmas(get_sigmas_ddim(SCHED, 30), 32)
    assert ddim_timesteps(T, T).tolist() == list(range(999, 0, -1))  # clipped, deduplicated


def test_karras_sigmas():
    sigmas = get_sigmas_karras(10, 0.03, 14.6)
    assert_valid_sigmas(sigmas, 11)
    assert sigmas[0].item() == pytest.approx(14.6, rel=1e-6)
    assert sigmas[-2].item() == pytest.approx(0.03, rel=1e-6)
    assert torch.allclose(get_sigmas_karras(5, 1.0, 5.0, rho=1.0)[:-1], torch.linspace(5, 1, 5))


def test_make_sigmas_picks_discretisation():
    assert torch.equal(make_sigmas(get_sampler("plms"), SCHED, 25), get_sigmas_ddim(SCHED, 25))
    assert torch.equal(make_sigmas(get_sampler("k_lms"), SCHED, 25), get_sigmas_uniform(SCHED, 25))
    karras = make_sigmas(get_sampler("ddim"), SCHED, 25, karras=True)
    assert torch.equal(karras, get_sigmas_karras(25, float(SCHED.sigma_min), float(SCHED.sigma_max)))


# ---------------------------------------------------------------- LMS coefficients


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_coefficients_integrate_polynomials_exactly(order):
    sigmas = get_sigmas_karras(8, 0.03, 14.6).tolist()
    i = 5
    coeffs = lms_coefficients(sigmas, i, order)
    # basis integrals sum to the interval length (integral of the constant 1)
    assert sum(coeffs) == pytest.approx(sigmas[i + 1] - sigmas[i], rel=1e-12)
    # and any slope polynomial of degree < order is integrated exactly
    poly = np.polynomial.Polynomial(np.random.default_rng(order).normal(size=order))
    exact = poly.integ()(sigmas[i + 1]) - poly.integ()(sigmas[i])
    approx = sum(c * poly(sigmas[i - j]) for j, c in enumerate(coeffs))
    assert approx == pytest.approx(exact, rel=1e-9)
