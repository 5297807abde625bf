"""v-prediction (SD 2.x 768-v): the config's `parameterization` decides, the training target is diffusers'
`get_velocity`, DDIM matches diffusers' DDIMScheduler(prediction_type="v_prediction") step for step, and
every sampler turns a v model into the same image as the eps model it was derived from."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import ROOT

from ldm.errors import ConfigError
from ldm.models.diffusion.denoiser import CompVisDenoiser
from ldm.models.diffusion.parameterization import eps_from_v, training_target, v_target, x0_from_v
from ldm.models.diffusion.sample import sample_latents
from ldm.models.diffusion.sampling import SAMPLERS, ddim_timesteps, get_sampler, make_sigmas

SHAPE = (2, 4, 8, 8)
# diffusers' names for the SD schedule ours calls beta_schedule "linear" (linear in sqrt(beta))
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def with_parameterization(tiny_config, value: str):
    config = OmegaConf.create(OmegaConf.to_container(tiny_config, resolve=True))
    config.model.params.parameterization = value
    return config


@pytest.fixture(scope="module")
def v_model(tiny_config, tiny_model):
    """The tiny network, declared a v model by its config (same weights as tiny_model)."""
    from ldm.model_loading import build_model

    model = build_model(with_parameterization(tiny_config, "v").model)
    model.load_state_dict(tiny_model.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def contexts(tiny_model):
    with torch.no_grad():
        return tiny_model.get_learned_conditioning(["a red cube", "a cat"]), tiny_model.get_learned_conditioning([""])


def ddim_scheduler(**kw):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        **SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction", **kw
    )


# -- the config decides ----------------------------------------------------------------------------------------
def test_parameterization_is_read_from_the_config(tiny_model, v_model):
    assert tiny_model.parameterization == "eps" and v_model.parameterization == "v"
    assert CompVisDenoiser(v_model).parameterization == "v"
    assert CompVisDenoiser(tiny_model).parameterization == "eps"


def test_unknown_parameterization_is_a_one_line_config_error(tiny_config):
    from ldm.model_loading import build_model

    with pytest.raises(ConfigError) as err:
        build_model(with_parameterization(tiny_config, "x").model)
    message = str(err.value)
    assert "\n" not in message and "parameterization 'x'" in message and "eps, v" in message


def test_txt2img_with_parameterization_x_says_one_line(tiny_config, tiny_ckpt, tmp_path):
    config = tmp_path / "tiny-x.yaml"
    OmegaConf.save(with_parameterization(tiny_config, "x"), config)
    out = tmp_path / "out"
    args = ["--prompt", "a cat", "--config", config, "--ckpt", tiny_ckpt, "--outdir", out, "--H", "64", "--W", "64"]
    proc = subprocess.run(
        [sys.executable, "scripts/txt2img.py", *map(str, args), "--ddim_steps", "2", "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "parameterization 'x'" in lines[0] and "eps, v" in lines[0]
    assert not list(out.rglob("*.png"))


# -- the training target and the conversions -------------------------------------------------------------------
def test_v_target_matches_diffusers_get_velocity(tiny_model):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**SD_SCHEDULE)
    assert torch.allclose(tiny_model.alphas_cumprod, scheduler.alphas_cumprod, rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    for t in ([0, 999], [1, 500], [250, 981]):
        t = torch.tensor(t)
        expected = scheduler.get_velocity(x0, noise, t)
        ours = v_target(x0, noise, tiny_model.alphas_cumprod, t)
        assert torch.allclose(ours, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(ours, noise, atol=1e-2)  # v is not eps: the comparison can fail
        assert torch.equal(training_target("v", x0, noise, tiny_model.alphas_cumprod, t), ours)
        assert torch.equal(training_target("eps", x0, noise, tiny_model.alphas_cumprod, t), noise)


def test_v_converts_back_to_the_noise_and_the_clean_sample(tiny_model):
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g)
    x0, noise, t = x0.float(), noise.float(), torch.tensor([3, 870])
    a = tiny_model.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = tiny_model.q_sample(x0, t, noise)
    v = v_target(x0, noise, tiny_model.alphas_cumprod, t)
    assert torch.allclose(eps_from_v(x_t, v, a), noise, rtol=0, atol=1e-5)
    assert torch.allclose(x0_from_v(x_t, v, a), x0, rtol=0, atol=1e-5)


def test_v_denoiser_is_x0_of_the_v_output_at_the_vp_sample(v_model, contexts):
    """D(x; sigma) = c_skip x + c_out v(c_in x) is sqrt(a) x_t - sqrt(1 - a) v with x_t = x sqrt(a)."""
    cond, _ = contexts
    den = CompVisDenoiser(v_model)
    t = torch.tensor([20, 700])
    a = v_model.alphas_cumprod[t].view(-1, 1, 1, 1)
    sigma = den.sigmas[t]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)) * sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        x_t = x * a.sqrt()
        expected = x0_from_v(x_t, v_model.apply_model(x_t, t.float(), cond), a)
        got = den(x, sigma, cond)
        as_eps = CompVisDenoiser(v_model, parameterization="eps")(x, sigma, cond)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(got, as_eps, atol=1e-2)


# -- DDIM against diffusers ------------------------------------------------------------------------------------
def test_one_ddim_step_matches_diffusers_v_prediction(v_model, contexts):
    cond, _ = contexts
    scheduler = ddim_scheduler()
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == ddim_timesteps(1000, 10).tolist()
    den = CompVisDenoiser(v_model)
    sigmas = make_sigmas(get_sampler("ddim"), den, 10)
    t = int(scheduler.timesteps[0])
    a, a_next = (float(v_model.alphas_cumprod[k]) for k in (t, int(scheduler.timesteps[1])))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4)) * sigmas[0]
    with torch.no_grad():
        ours = get_sampler("ddim").fn(den, x, sigmas[:2], extra_args={"cond": cond})
        x_t = x * math.sqrt(a)
        v = v_model.apply_model(x_t, torch.full((SHAPE[0],), t), cond)
        theirs = scheduler.step(v, t, x_t).prev_sample
    assert torch.allclose(ours * math.sqrt(a_next), theirs, rtol=0, atol=1e-4)
    assert (theirs - x_t).abs().max() > 1e-2  # the step moves: matching it means something


@pytest.mark.parametrize("cfg_scale", [pytest.param(1.0, marks=pytest.mark.slow), 7.5])  # 1.0: slow, for time
def test_ddim_run_matches_diffusers_v_prediction(v_model, contexts, cfg_scale):
    """Every step's latent and the final x0 of a 10-step run (plain and guided), through sample_latents.

    Ours works in x = x_t / sqrt(a_t) and ends at sigma = 0 (the clean estimate); diffusers with
    set_alpha_to_one=False ends at alpha_bar[0], so its last pred_original_sample is our result."""
    cond, uncond = contexts
    steps, seed = 10, 5
    seen: list[dict] = []
    with torch.no_grad():
        ours = sample_latents(
            v_model,
            cond,
            uncond,
            shape=SHAPE,
            generator=torch.Generator().manual_seed(seed),
            sampler="ddim",
            steps=steps,
            cfg_scale=cfg_scale,
            callback=seen.append,
        )
        scheduler = ddim_scheduler()
        scheduler.set_timesteps(steps)
        # the same start: our x_T = noise * sigma_max is the VP sample noise * sigma_max * sqrt(a_T)
        t_max = int(scheduler.timesteps[0])
        sigma_max = float(CompVisDenoiser(v_model).sigmas[t_max])
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
        latents = noise * sigma_max * math.sqrt(float(v_model.alphas_cumprod[t_max]))
        both = torch.cat([uncond.expand(SHAPE[0], -1, -1), cond])
        assert len(seen) == len(scheduler.timesteps)
        for step, t in zip(seen, scheduler.timesteps.tolist()):
            a = float(v_model.alphas_cumprod[t])
            assert torch.allclose(step["x"] * math.sqrt(a), latents, rtol=0, atol=1e-4), t
            v_uncond, v_cond = v_model.apply_model(
                torch.cat([latents] * 2), torch.full((2 * SHAPE[0],), t), both
            ).chunk(2)
            v = v_cond if cfg_scale == 1.0 else v_uncond + cfg_scale * (v_cond - v_uncond)
            out = scheduler.step(v, t, latents)
            latents = out.prev_sample
    assert torch.allclose(ours, out.pred_original_sample, rtol=0, atol=1e-4)
    assert (ours - seen[0]["x"]).abs().max() > 1e-1


# -- every sampler: a v model sampling the same image as its eps twin --------------------------------------------
class VFromEps(torch.nn.Module):
    """A v model made from an eps model: v = sqrt(a) eps - sqrt(1 - a) x0, with x0 implied by eps at x_t.

    a comes from the (fractional) timestep the denoiser asks for, through the same sigma table, so the only
    difference from sampling the eps model directly is the parameterization the denoiser has to undo."""

    parameterization = "v"

    def __init__(self, eps_model: torch.nn.Module):
        super().__init__()
        self.eps_model = eps_model
        self.alphas_cumprod = eps_model.alphas_cumprod
        self.table = CompVisDenoiser(eps_model)

    def apply_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        eps = self.eps_model.apply_model(x_t, t, cond)
        sigma = self.table.t_to_sigma(t).to(torch.float64).view(-1, 1, 1, 1)
        a = 1 / (1 + sigma**2)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).to(x_t.dtype)


# One deterministic and one ancestral sampler by default; the others are slow-marked to keep the
# default suite short (each ~10 s), and all run in CI's slow step.
DEFAULT_SAMPLERS = ("ddim", "k_euler_a")


@pytest.mark.parametrize(
    "sampler", [s if s in DEFAULT_SAMPLERS else pytest.param(s, marks=pytest.mark.slow) for s in SAMPLERS]
)
def test_v_model_samples_the_image_of_its_eps_twin(tiny_model, contexts, sampler):
    cond, uncond = contexts

    def sample(model):
        with torch.no_grad():
            return sample_latents(
                model, cond, uncond, shape=SHAPE, generator=torch.Generator().manual_seed(6), sampler=sampler, steps=5
            )

    twin = VFromEps(tiny_model)
    eps_image, v_image = sample(tiny_model), sample(twin)
    # float32 rounding of the scalings grows with |x|: the random tiny model's latents reach ~60 at scale
    # 7.5 (observed worst: k_dpm_2_a 9e-4 = 1.6e-5 of it); real SD latents stay within ~4, i.e. <= 1e-4
    scale = max(1.0, float(eps_image.abs().max()))
    assert (v_image - eps_image).abs().max() <= 1e-4 * scale
    # the same v outputs read as eps give another image: the denoiser's v scalings are what match
    with torch.no_grad():
        wrong = sample_latents(
            tiny_model,
            cond,
            uncond,
            shape=SHAPE,
            generator=torch.Generator().manual_seed(6),
            sampler=sampler,
            steps=5,
            denoiser=CompVisDenoiser(twin, parameterization="eps"),
        )
    assert (wrong - eps_image).abs().max() > 1e-2 * scale
