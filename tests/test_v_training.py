"""Training a v-prediction model (SD 2.x 768-v): the objective compares the UNet output with diffusers'
`get_velocity`, min-SNR-gamma weights v by min(SNR, gamma) / (SNR + 1), and a step reaches only the vectors."""

from __future__ import annotations

import pytest
import torch
from train_helpers import TINY_FINETUNE, make_concept

from ldm.training.loss import diffusion_loss, min_snr_weights

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def sd_alphas_cumprod() -> torch.Tensor:
    from ldm.models.diffusion.schedule import make_beta_schedule, schedule_buffers

    return schedule_buffers(make_beta_schedule("linear", 1000, 0.00085, 0.012))["alphas_cumprod"]


# -- min-SNR-gamma -------------------------------------------------------------------------------------------------
def test_min_snr_weights_for_v_divide_by_snr_plus_one():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    ac, t, gamma = sd_alphas_cumprod(), torch.tensor([0, 10, 200, 500, 999]), 5.0
    snr = compute_snr(DDPMScheduler(**SD_SCHEDULE), t)  # diffusers' SNR, the one its examples weight with
    w_v = min_snr_weights(ac, t, gamma, "v")
    w_eps = min_snr_weights(ac, t, gamma, "eps")
    # diffusers' train_text_to_image: mse_loss_weights = min(snr, gamma) / (snr + 1) for v_prediction
    torch.testing.assert_close(w_v, torch.clamp(snr, max=gamma) / (snr + 1), rtol=1e-5, atol=0)
    torch.testing.assert_close(w_eps, torch.clamp(snr, max=gamma) / snr, rtol=1e-5, atol=0)
    assert (w_v < w_eps).all() and (w_v < 1).all()  # the v weights are not the eps weights
    assert torch.equal(min_snr_weights(ac, t, gamma), w_eps)  # eps is the default


def test_min_snr_weights_both_targets_to_the_same_clean_sample_loss():
    # The same x0 error costs SNR x its MSE as an eps error and (SNR + 1) x as a v error; after the min-SNR
    # weights both are min(SNR, gamma) x the x0 MSE, so eps and v models are trained alike.
    from ldm.models.diffusion.parameterization import v_target

    ac, gamma = sd_alphas_cumprod(), 5.0
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    x0_guess = x0 + 0.1 * torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 400, 990])
    a = ac[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    eps_guess = (x_t - a.sqrt() * x0_guess) / (1 - a).sqrt()  # what a model believing x0_guess predicts
    v_guess = a.sqrt() * eps_guess - (1 - a).sqrt() * x0_guess
    eps_loss = diffusion_loss(eps_guess, noise, t, ac, gamma, parameterization="eps")
    v_loss = diffusion_loss(v_guess, v_target(x0, noise, ac, t), t, ac, gamma, parameterization="v")
    snr = ac[t] / (1 - ac[t])
    x0_loss = (((x0_guess - x0) ** 2).mean(dim=(1, 2, 3)) * torch.clamp(snr, max=gamma)).mean()
    torch.testing.assert_close(eps_loss, x0_loss, rtol=1e-4, atol=0)
    torch.testing.assert_close(v_loss, x0_loss, rtol=1e-4, atol=0)
    unweighted_v = diffusion_loss(v_guess, v_target(x0, noise, ac, t), t, ac)
    assert not torch.allclose(unweighted_v, x0_loss, rtol=1e-2)  # the weights did something


def test_unknown_parameterization_in_the_loss_is_a_config_error():
    from ldm.errors import ConfigError

    with pytest.raises(ConfigError, match="parameterization 'x'"):
        min_snr_weights(sd_alphas_cumprod(), torch.tensor([1]), 5.0, "x")


# -- one objective step of a v model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v_objective_and_batch(tiny_ckpt, tmp_path_factory):
    from omegaconf import OmegaConf

    from ldm.model_loading import load_model_from_config
    from ldm.training.config import TrainingConfig
    from ldm.training.objective import TextualInversionObjective
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(TINY_FINETUNE)
    cfg.model.params.parameterization = "v"
    cfg.data.params.train.params.data_root = str(make_concept(tmp_path_factory.mktemp("c") / "c"))
    model = load_model_from_config(cfg, tiny_ckpt)
    data = instantiate_from_config(cfg.data)
    data.setup("fit")
    objective = TextualInversionObjective(model, TrainingConfig(min_snr_gamma=5.0))
    objective.prepare_networks()
    return objective, next(iter(data.train_dataloader()))


def test_v_model_step_targets_diffusers_velocity_and_reaches_only_the_vectors(v_objective_and_batch, monkeypatch):
    from diffusers import DDPMScheduler

    objective, batch = v_objective_and_batch
    model = objective.model
    assert model.parameterization == "v"
    seen = {}
    q_sample, apply_model = model.q_sample, model.apply_model

    def record_q_sample(z, t, noise):
        seen.update(z=z.detach(), t=t, noise=noise)
        return q_sample(z, t, noise)

    def record_apply_model(*args, **kwargs):
        seen["prediction"] = out = apply_model(*args, **kwargs)
        return out

    monkeypatch.setattr(model, "q_sample", record_q_sample)
    monkeypatch.setattr(model, "apply_model", record_apply_model)
    optimizer = objective.configure_optimizers(1e-3, 10)["optimizer"]
    trainable = {id(p) for group in optimizer.param_groups for p in group["params"]}
    model.zero_grad(set_to_none=True)
    loss, logs = objective(batch)
    loss.backward()

    velocity = DDPMScheduler(**SD_SCHEDULE).get_velocity(seen["z"], seen["noise"], seen["t"].cpu())
    prediction, t = seen["prediction"].detach().float(), seen["t"]
    weights = min_snr_weights(model.alphas_cumprod, t, 5.0, "v")
    expected = (((prediction - velocity) ** 2).mean(dim=(1, 2, 3)) * weights).mean()
    torch.testing.assert_close(logs["loss_simple"], expected, rtol=1e-4, atol=1e-7)
    against_noise = (((prediction - seen["noise"]) ** 2).mean(dim=(1, 2, 3)) * weights).mean()
    assert not torch.isclose(logs["loss_simple"], against_noise, rtol=1e-2)  # the target is not the noise
    assert torch.isfinite(loss)
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad and all(id(p) in trainable for p in model.parameters() if p.grad is not None), with_grad
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
