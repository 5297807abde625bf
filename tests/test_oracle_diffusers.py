"""Oracle: an SD v1 model of ours, converted by diffusers' own single-file converters, loads strictly
into diffusers' UNet2DConditionModel/AutoencoderKL and transformers' CLIPTextModel, and all three give
our outputs to <= 1e-4 in fp32. This proves the checkpoint layout and the maths at once.

The tiny model (same classes and key layout) runs in the default suite; the full-size one (1.1B
parameters, ~10 GB while converting) is marked slow."""

from __future__ import annotations

import gc

import pytest
import torch
from diffusers_oracle import assert_vae_matches_diffusers
from omegaconf import OmegaConf
from sd_helpers import SD_CONFIG, TINY_CONFIG, load_config, randomize_, text_state_dict
from sd_helpers import strict_into as _strict_into

TOL = 1e-4


@pytest.fixture(
    scope="module",
    params=[pytest.param(TINY_CONFIG, id="tiny"), pytest.param(SD_CONFIG, id="full", marks=pytest.mark.slow)],
)
def full(request):
    from ldm.model_loading import build_model

    cfg = load_config(request.param)
    model = randomize_(build_model(cfg.model, random_init=False), seed=1).eval()
    yield cfg, model, model.state_dict()
    del model
    gc.collect()


@torch.no_grad()
def test_unet_matches_diffusers(full):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    cfg, model, sd = full
    ucfg = create_unet_diffusers_config_from_ldm(OmegaConf.to_container(cfg), sd)
    converted = convert_ldm_unet_checkpoint(sd, ucfg)
    assert len(converted) == sum(k.startswith("model.diffusion_model.") for k in sd)
    unet = _strict_into(lambda: UNet2DConditionModel(**ucfg), converted)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 77, model.cond_stage_model.text_model.config.hidden_size, generator=g)
    ours = model.apply_model(x, t, ctx)
    theirs = unet(x, t, encoder_hidden_states=ctx).sample
    assert ours.abs().mean() > 0.1  # random weights give a non-trivial prediction
    assert (ours - theirs).abs().max().item() <= TOL
    del unet, converted
    gc.collect()


def test_vae_matches_diffusers(full):
    cfg, model, sd = full
    assert_vae_matches_diffusers(cfg, model, sd, image_side=128, latent_side=32)


@torch.no_grad()
def test_text_encoder_matches_transformers(full):
    from transformers import CLIPTextModel

    _, model, sd = full
    encoder = model.cond_stage_model
    text = _strict_into(lambda: CLIPTextModel(encoder.text_model.config), text_state_dict(sd))
    text.embeddings.position_ids = torch.arange(77).expand(1, -1)  # non-persistent buffer, meta after build
    ids = encoder.tokenize(["a photo of a cat", "an oil painting of * in the style of *"])
    ours = encoder.encode_tokens(ids)
    theirs = text(input_ids=ids).last_hidden_state
    assert ours.shape == (2, 77, encoder.text_model.config.hidden_size)
    assert (ours - theirs).abs().max().item() <= TOL
