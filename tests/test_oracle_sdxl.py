"""Oracle for the SDXL UNet and VAE (the text encoders' oracle is test_oracle_sdxl_text.py): a model of ours
(random weights, perturbed so no layer is zero) converted by diffusers' own single-file converters loads
strictly into UNet2DConditionModel (addition_embed_type "text_time") and AutoencoderKL, and both give our
outputs in fp32: the UNet at 32x32 latents with diffusers' `text_embeds` (pooled) + `time_ids` against ours
with y = our conditioner's vector of the same pooled output and sizes (<= 1e-4 relative), the VAE to 1e-4.

The tiny model runs in the default suite; the full-size one (UNet 2.6B parameters, built on the meta device
and filled once; diffusers' copy shares our tensors) is marked slow: ran here in 7.3 min on 2 cores,
11 GB peak RSS."""

from __future__ import annotations

import gc

import pytest
import torch
from diffusers_oracle import TOL, assert_vae_matches_diffusers, diffusers_unet
from sd_helpers import SDXL_CONFIG, TINY_SDXL_CONFIG, load_config, randomize_

# The converters' image_size argument is deprecated but the only way to name a tiny model's size offline.
pytestmark = pytest.mark.filterwarnings("ignore:`image_size` is deprecated:FutureWarning")
ORIGINAL = torch.tensor([[1024.0, 768.0], [512.0, 512.0]])  # (height, width)
CROP = torch.tensor([[0.0, 32.0], [16.0, 0.0]])  # (top, left)
TARGET = torch.tensor([[1024.0, 1024.0], [1024.0, 1024.0]])


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((TINY_SDXL_CONFIG, 64), id="tiny"),
        pytest.param((SDXL_CONFIG, 1024), id="full", marks=pytest.mark.slow),
    ],
)
def sdxl(request):
    """(config, model, state dict of the UNet and VAE, pixel image size). Only the UNet and the VAE are
    allocated and filled: the text encoders stay on the meta device (their oracle is elsewhere)."""
    from ldm.model_loading import _build_on_meta

    path, image_size = request.param
    cfg = load_config(path)
    model = _build_on_meta(cfg.model)
    for net in (model.model, model.first_stage_model):
        net.to_empty(device="cpu")
        randomize_(net, seed=1)
    model.eval()
    sd = {k: v for k, v in model.state_dict().items() if k.startswith(("model.diffusion_model.", "first_stage_model."))}
    yield cfg, model, sd, image_size
    del model, sd
    gc.collect()


def test_is_the_sdxl_layout(sdxl):
    cfg, model, sd, _ = sdxl
    adm = cfg.model.params.network_config.params.adm_in_channels
    assert model.is_sdxl and model.uses_vector and model.conditioner.vector_width == adm
    assert sd["model.diffusion_model.label_emb.0.0.weight"].shape == (4 * model.unet.model_channels, adm)
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in sd)  # level 0: no attention


@torch.no_grad()
def test_unet_matches_diffusers_with_text_embeds_and_time_ids(sdxl):
    cfg, model, sd, image_size = sdxl
    conditioner = model.conditioner
    outdim = conditioner.size_embedders[0].outdim
    # The converter says "SDXL" from the context width (2048); the tiny model needs telling.
    unet = diffusers_unet(
        cfg,
        sd,
        image_size=image_size,
        addition_embed_type="text_time",
        addition_time_embed_dim=outdim,
        class_embed_type=None,
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([10, 700])
    context = torch.randn(2, 77, model.text_width, generator=g)
    pooled = torch.randn(2, conditioner.vector_width - 3 * 2 * outdim, generator=g)
    y = conditioner.vector(pooled, ORIGINAL, CROP, TARGET)
    ours = model.apply_model(x, t, {"crossattn": context, "vector": y})
    time_ids = torch.cat([ORIGINAL, CROP, TARGET], dim=1)
    theirs = unet(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
    theirs = theirs.sample
    assert ours.abs().mean() > 0.1  # random weights give a non-trivial prediction
    assert (ours - theirs).abs().max().item() <= TOL * theirs.abs().max().item()
    # the vector matters: other sizes give another prediction
    other = model.apply_model(x, t, {"crossattn": context, "vector": conditioner.vector(pooled, TARGET, CROP, TARGET)})
    assert (other - ours).abs().max().item() > 100 * TOL * theirs.abs().max().item()
    del unet
    gc.collect()


def test_vae_matches_diffusers(sdxl):
    cfg, model, sd, image_size = sdxl
    assert model.scale_factor == pytest.approx(0.13025)
    assert_vae_matches_diffusers(cfg, model, sd, image_side=64, latent_side=16, image_size=image_size)
