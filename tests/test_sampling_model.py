"""Sampling with a real (tiny, random) LatentDiffusion: seeds, guidance, the CompVis denoiser adapter,
step callbacks, bf16, and the one-line errors for bad sizes and sampler names.

Figures in comments were observed with torch 2.13 CPU on the `tiny_model` fixture.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sd_helpers import TINY_CONFIG

from ldm.errors import ConfigError
from ldm.generate import Generate, check_size
from ldm.models.diffusion.denoiser import CompVisDenoiser
from ldm.models.diffusion.guidance import CFGDenoiser
from ldm.models.diffusion.sample import sample_latents
from ldm.models.diffusion.sampling import SAMPLERS, UnknownSamplerError, get_sampler, make_sigmas
from ldm.models.diffusion.schedule import SCHEDULE_BUFFERS

SHAPE = (1, 4, 8, 8)  # latents of a 64x64 image
STEPS = 4  # divides 1000, so ddim/plms also take exactly 4 steps


@pytest.fixture(scope="module")
def gen(tiny_model):
    return Generate(config=TINY_CONFIG, model=tiny_model, device="cpu", precision="full")


@pytest.fixture(scope="module")
def contexts(tiny_model):
    with torch.no_grad():
        return {p: tiny_model.get_learned_conditioning([p]) for p in ("a cat", "a dog", "", "blurry")}


@pytest.fixture(scope="module")
def den(tiny_model):
    return CompVisDenoiser(tiny_model)


def _sample(model, contexts, sampler, seed, *, prompt="a cat", negative="", scale=7.5, steps=STEPS, **kw):
    return sample_latents(
        model,
        contexts[prompt],
        None if negative is None else contexts[negative],
        shape=SHAPE,
        generator=torch.Generator().manual_seed(seed),
        sampler=sampler,
        steps=steps,
        cfg_scale=scale,
        **kw,
    )


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# -- seeds -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_same_seed_is_bit_identical_and_another_seed_differs(tiny_model, contexts, sampler):
    a = _sample(tiny_model, contexts, sampler, seed=123)
    b = _sample(tiny_model, contexts, sampler, seed=123)
    c = _sample(tiny_model, contexts, sampler, seed=124)
    assert a.shape == SHAPE and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-2 * a.abs().mean()


@pytest.mark.parametrize("sampler", ["k_euler_a", "k_dpm_2_a"])
def test_ancestral_samplers_draw_their_step_noise_from_the_seed(tiny_model, contexts, sampler):
    """Same initial latents but another noise stream must change an ancestral sample: the per-step noise
    comes from the seeded generator, not from the global RNG (which is reseeded here to prove it)."""
    torch.manual_seed(0)
    a = _sample(tiny_model, contexts, sampler, seed=5)
    torch.manual_seed(99)
    b = _sample(tiny_model, contexts, sampler, seed=5)
    assert torch.equal(a, b)


def test_generate_same_seed_gives_identical_images(gen):
    kw = dict(steps=STEPS, width=64, height=64, sampler_name="k_euler_a", batch_size=2)
    first = gen.txt2img("a cat", seed=7, **kw)
    again = gen.txt2img("a cat", seed=7, **kw)
    other = gen.txt2img("a cat", seed=8, **kw)
    assert [s for _, s in first] == [7, 7] and [im.size for im, _ in first] == [(64, 64)] * 2
    for (x, _), (y, _) in zip(first, again):
        assert np.array_equal(_pixels(x), _pixels(y))
    # seed 7 vs 8: mean |diff| was ~70 of 255
    assert np.abs(_pixels(first[0][0]) - _pixels(other[0][0])).mean() > 5


def test_generate_iterations_use_consecutive_seeds(gen):
    kw = dict(steps=STEPS, width=64, height=64, sampler_name="ddim")
    two = gen.txt2img("a cat", seed=20, iterations=2, **kw)
    single = gen.txt2img("a cat", seed=21, **kw)
    assert [s for _, s in two] == [20, 21]
    assert np.array_equal(_pixels(two[1][0]), _pixels(single[0][0]))
    assert not np.array_equal(_pixels(two[0][0]), _pixels(two[1][0]))


# -- classifier-free guidance ------------------------------------------------------------------------------
def _noisy(seed=1, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *SHAPE[1:], generator=g) * 3, torch.tensor([2.0, 0.7])[:batch]


@torch.no_grad()
def test_scale_one_is_exactly_the_conditional_prediction(den, contexts):
    x, sigma = _noisy()
    cond = torch.cat([contexts["a cat"], contexts["a dog"]])
    uncond = torch.cat([contexts[""], contexts[""]])
    guided = CFGDenoiser(den)(x, sigma, cond, uncond, 1.0)
    assert torch.equal(guided, den(x, sigma, cond))
    assert not torch.allclose(guided, den(x, sigma, uncond), atol=1e-3)  # the two predictions do differ


@pytest.mark.parametrize("sampler", ["k_lms", "ddim"])
def test_full_run_at_scale_one_ignores_uncond(tiny_model, contexts, sampler):
    with_uncond = _sample(tiny_model, contexts, sampler, seed=3, negative="blurry", scale=1.0)
    without = _sample(tiny_model, contexts, sampler, seed=3, negative=None, scale=1.0)
    guided = _sample(tiny_model, contexts, sampler, seed=3, negative="blurry", scale=7.5)
    assert torch.equal(with_uncond, without)
    assert not torch.allclose(with_uncond, guided, atol=1e-3)


@torch.no_grad()
def test_guidance_at_7_5_is_u_plus_scale_times_c_minus_u(den, contexts):
    x, sigma = _noisy()
    cond = torch.cat([contexts["a cat"], contexts["a dog"]])
    uncond = torch.cat([contexts["blurry"], contexts[""]])
    guided = CFGDenoiser(den)(x, sigma, cond, uncond, 7.5)
    c, u = den(x, sigma, cond), den(x, sigma, uncond)
    # The batched halves equal separate calls up to batch-size-dependent float rounding (~5e-6 seen).
    both_u, both_c = den(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([uncond, cond])).chunk(2)
    torch.testing.assert_close(both_u, u, rtol=0, atol=1e-5)
    torch.testing.assert_close(both_c, c, rtol=0, atol=1e-5)
    # The formula itself is exact on the batched halves ...
    assert torch.equal(guided, both_u + (both_c - both_u) * 7.5)
    # ... and matches the unbatched calls within 7.5x their rounding (max 3.4e-5 seen on |D| ~ 10).
    torch.testing.assert_close(guided, u + 7.5 * (c - u), rtol=0, atol=1e-4)
    assert (guided - c).abs().max() > 0.5  # guidance moves the prediction (|c - u| ~ 0.44, x 6.5)


@torch.no_grad()
def test_guidance_with_a_single_uncond_for_a_batch(den, contexts):
    """An uncond of batch 1 (one negative prompt) broadcasts over a batch of conds."""
    x, sigma = _noisy()
    cond = torch.cat([contexts["a cat"], contexts["a dog"]])
    guided = CFGDenoiser(den)(x, sigma, cond, contexts["blurry"], 7.5)
    full = CFGDenoiser(den)(x, sigma, cond, torch.cat([contexts["blurry"]] * 2), 7.5)
    assert torch.equal(guided, full)


def test_negative_prompt_changes_the_image(gen):
    kw = dict(steps=STEPS, width=64, height=64, seed=3, cfg_scale=7.5, sampler_name="k_euler")
    plain = _pixels(gen.txt2img("a cat", negative_prompt="", **kw)[0][0])
    negative = _pixels(gen.txt2img("a cat", negative_prompt="blurry", **kw)[0][0])
    assert np.abs(plain - negative).mean() > 1  # ~13 of 255 seen


def test_negative_prompt_is_ignored_without_guidance(gen):
    kw = dict(steps=STEPS, width=64, height=64, seed=3, cfg_scale=1.0, sampler_name="k_euler")
    plain = _pixels(gen.txt2img("a cat", negative_prompt="", **kw)[0][0])
    negative = _pixels(gen.txt2img("a cat", negative_prompt="blurry", **kw)[0][0])
    assert np.array_equal(plain, negative)


# -- CompVisDenoiser -----------------------------------------------------------------------------------------
def _discrete_sigmas(model) -> torch.Tensor:
    ac = model.alphas_cumprod.double()
    return ((1 - ac) / ac).sqrt()


def test_sigma_to_t_inverts_t_to_sigma_at_fractional_t(den):
    t = torch.cat(
        [torch.rand(2000, generator=torch.Generator().manual_seed(0)) * 999, torch.tensor([0.0, 0.25, 998.5, 999.0])]
    )
    back = den.sigma_to_t(den.t_to_sigma(t))
    torch.testing.assert_close(back, t, rtol=0, atol=1e-3)  # max error 6e-5 seen (float32 near 999)
    # and the sigma is strictly between its integer neighbours' sigmas
    frac = t[(t % 1 > 0.01) & (t % 1 < 0.99)]
    s = den.t_to_sigma(frac)
    assert ((den.sigmas[frac.floor().long()] < s) & (s < den.sigmas[frac.ceil().long()])).all()


def test_integer_t_maps_to_the_discrete_training_sigma(tiny_model, den):
    expected = _discrete_sigmas(tiny_model)
    assert expected.shape == (1000,)
    t = torch.arange(1000, dtype=torch.float32)
    torch.testing.assert_close(den.t_to_sigma(t).double(), expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(den.sigma_min.double(), expected[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(den.sigma_max.double(), expected[-1], rtol=1e-5, atol=0)
    torch.testing.assert_close(den.sigma_to_t(den.sigmas), t, rtol=0, atol=1e-3)


@torch.no_grad()
def test_denoiser_is_x_minus_sigma_eps_of_the_scaled_input(tiny_model, den, contexts):
    x, _ = _noisy(seed=4)
    cond = torch.cat([contexts["a cat"], contexts["a dog"]])
    ac = tiny_model.alphas_cumprod.float()
    t = torch.tensor([10, 600])
    sigma = ((1 - ac[t]) / ac[t]).sqrt()  # exactly the denoiser's discrete sigmas, so t is exact
    c_in = (1 / (sigma**2 + 1).sqrt()).view(-1, 1, 1, 1)
    eps = tiny_model.apply_model(x * c_in, t.float(), cond)
    expected = x - sigma.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(den(x, sigma, cond), expected, rtol=0, atol=1e-5)
    # The unscaled input would give something else: c_in matters.
    assert not torch.allclose(
        x - sigma.view(-1, 1, 1, 1) * tiny_model.apply_model(x, t.float(), cond), expected, atol=1e-2
    )

    # A fractional timestep: sigma log-interpolated by hand between t=250 and t=251.
    s250, s251 = ((1 - ac[250:252]) / ac[250:252]).sqrt().double()
    sig = torch.tensor([float((0.5 * (s250.log() + s251.log())).exp())] * 2)
    c_in = (1 / (sig**2 + 1).sqrt()).view(-1, 1, 1, 1)
    expected = x - sig.view(-1, 1, 1, 1) * tiny_model.apply_model(x * c_in, torch.tensor([250.5, 250.5]), cond)
    torch.testing.assert_close(den(x, sig, cond), expected, rtol=0, atol=1e-4)


# -- step callback -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_step_callback_once_per_step(tiny_model, contexts, den, sampler):
    calls = []
    _sample(tiny_model, contexts, sampler, seed=1, steps=5, callback=calls.append)
    n_steps = len(make_sigmas(get_sampler(sampler), den, 5)) - 1
    if not sampler.startswith(("ddim", "plms")):
        assert n_steps == 5  # continuous-time samplers take exactly the steps asked for
    assert [c["i"] for c in calls] == list(range(n_steps))
    assert all(c["x"].shape == SHAPE and c["denoised"].shape == SHAPE for c in calls)
    sigmas = [float(c["sigma"]) for c in calls]
    assert sigmas == sorted(sigmas, reverse=True) and len(set(sigmas)) == len(sigmas)


def test_generate_step_callback_counts_steps(gen):
    calls = []
    gen.txt2img(
        "a cat", steps=5, width=64, height=64, seed=1, sampler_name="k_euler", iterations=2, step_callback=calls.append
    )
    assert [c["i"] for c in calls] == [0, 1, 2, 3, 4] * 2


# -- bf16 ----------------------------------------------------------------------------------------------------
def test_bf16_network_samples_close_to_fp32(tiny_model, gen):
    model = copy.deepcopy(tiny_model).set_network_dtype(torch.bfloat16)
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert next(model.first_stage_model.parameters()).dtype == torch.bfloat16
    assert next(model.cond_stage_model.parameters()).dtype == torch.bfloat16
    for name in SCHEDULE_BUFFERS:
        assert getattr(model, name).dtype == torch.float32, name
    torch.testing.assert_close(model.alphas_cumprod, tiny_model.alphas_cumprod, rtol=0, atol=0)

    kw = dict(steps=5, width=64, height=64, seed=3, sampler_name="k_euler")
    low = Generate(config=TINY_CONFIG, model=model, device="cpu", precision="bf16").txt2img("a cat", **kw)[0][0]
    full = gen.txt2img("a cat", **kw)[0][0]
    other_seed = gen.txt2img("a cat", **{**kw, "seed": 4})[0][0]
    diff = np.abs(_pixels(low) - _pixels(full))
    # Seen: bf16 vs fp32 mean |diff| 3.0 of 255 (max 23); another seed differs by ~70 on average.
    assert diff.mean() < 10
    assert diff.mean() < 0.25 * np.abs(_pixels(other_seed) - _pixels(full)).mean()
    # the fp32 denoiser's sigmas are unaffected by the cast
    assert torch.equal(CompVisDenoiser(model).sigmas, CompVisDenoiser(tiny_model).sigmas)


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "width, height, bad", [(60, 64, "width 60"), (64, 12, "height 12"), (4, 64, "width 4"), (64, 0, "height 0")]
)
def test_size_not_multiple_of_8_is_a_config_error_naming_the_value(gen, width, height, bad):
    with pytest.raises(ConfigError, match=bad) as info:
        gen.txt2img("a cat", steps=2, width=width, height=height)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=bad):
        check_size(width, height)


def test_unknown_sampler_lists_the_choices(tiny_model, gen, contexts):
    for call in (
        lambda: Generate(config=TINY_CONFIG, model=tiny_model, device="cpu", sampler_name="nope"),
        lambda: gen.txt2img("a cat", steps=2, width=64, height=64, sampler_name="nope"),
        lambda: _sample(tiny_model, contexts, "nope", seed=1),
    ):
        with pytest.raises(UnknownSamplerError) as info:
            call()
        message = str(info.value)
        assert "'nope'" in message and "k_euler_a" in message
        assert all(name in message for name in SAMPLERS)
        assert isinstance(info.value, ConfigError)
