"""Oracle for SD 2.x: a model of ours (random weights, perturbed so no layer is zero) in Stability's
checkpoint layout, converted by diffusers' own single-file converters, loads strictly into diffusers'
UNet2DConditionModel/AutoencoderKL and transformers' CLIPTextModel, and all three give our outputs to
<= 1e-4 in fp32: the UNet (an eps and a v model), the VAE, and the text hidden states of real prompts
tokenised the OpenCLIP way (0-padding). The full-size 768 v-model file also loads through our own loader
with v2-inference-v.yaml, every key accounted for.

The tiny models (tiny-v2.yaml, tiny-v2-v.yaml) run in the default suite; the full-size one (1.3B
parameters, ~12 GB peak while converting) is marked slow."""

from __future__ import annotations

import gc

import pytest
import torch
from diffusers_oracle import assert_vae_matches_diffusers
from omegaconf import OmegaConf
from sd_helpers import (
    OPEN_CLIP_PREFIX,
    ROOT,
    TINY_V2_CONFIG,
    TINY_V2_V_CONFIG,
    load_config,
    open_clip_twin,
    randomize_,
    strict_into,
)

TOL = 1e-4
SD2_V_CONFIG = ROOT / "configs" / "stable-diffusion" / "v2-inference-v.yaml"
PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "a painting of a fox sitting in a field at sunrise, by Claude Monet, highly detailed!!!",
    "",
]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(TINY_V2_CONFIG, id="tiny-eps"),
        pytest.param(TINY_V2_V_CONFIG, id="tiny-v"),
        pytest.param(SD2_V_CONFIG, id="full-v", marks=pytest.mark.slow),
    ],
)
def sd2(request):
    from ldm.model_loading import build_model

    cfg = load_config(request.param)
    model = randomize_(build_model(cfg.model, random_init=False), seed=1).eval()
    yield cfg, model, model.state_dict()
    del model
    gc.collect()


def test_is_the_sd2_layout(sd2):
    cfg, model, sd = sd2
    assert model.parameterization == cfg.model.params.get("parameterization", "eps")
    assert f"{OPEN_CLIP_PREFIX}token_embedding.weight" in sd and f"{OPEN_CLIP_PREFIX}text_projection" in sd
    assert not any(k.startswith("cond_stage_model.transformer.") for k in sd)
    proj_in = sd["model.diffusion_model.input_blocks.1.1.proj_in.weight"]
    assert proj_in.dim() == 2  # linear projections (SD 1.x: 1x1 convolutions)
    width = model.cond_stage_model.width
    assert sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1] == width


@torch.no_grad()
def test_unet_matches_diffusers(sd2):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    cfg, model, sd = sd2
    ucfg = create_unet_diffusers_config_from_ldm(OmegaConf.to_container(cfg), sd)
    assert ucfg["use_linear_projection"] and ucfg["cross_attention_dim"] == model.cond_stage_model.width
    converted = convert_ldm_unet_checkpoint(sd, ucfg)
    assert len(converted) == sum(k.startswith("model.diffusion_model.") for k in sd)
    unet = strict_into(lambda: UNet2DConditionModel(**ucfg), converted)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 77, model.cond_stage_model.width, generator=g)
    ours = model.apply_model(x, t, ctx)  # eps or v, as the config says: the network is the same
    theirs = unet(x, t, encoder_hidden_states=ctx).sample
    assert ours.abs().mean() > 0.1  # random weights give a non-trivial prediction
    assert (ours - theirs).abs().max().item() <= TOL
    del unet, converted
    gc.collect()


def test_vae_matches_diffusers(sd2):
    cfg, model, sd = sd2
    assert_vae_matches_diffusers(cfg, model, sd, image_side=64, latent_side=16)


@torch.no_grad()
def test_text_encoder_matches_transformers(sd2):
    _, model, sd = sd2
    encoder = model.cond_stage_model
    assert encoder.layer == "penultimate" and encoder.tokenizer.pad_token_id == 0
    twin = open_clip_twin(encoder, {k: v for k, v in sd.items() if k.startswith(OPEN_CLIP_PREFIX)})
    ids = encoder.tokenize(PROMPTS)
    assert (ids == 0).any()  # padded with 0, not EOS
    ours = encoder(PROMPTS)  # tokenise + encode, as conditioning does
    theirs = twin(input_ids=ids).last_hidden_state
    assert ours.shape == (len(PROMPTS), 77, encoder.width) and ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max().item() <= TOL


def test_the_file_loads_through_our_loader_with_every_key(sd2, tmp_path):
    """Our model saved as Stability's files are (fp16 safetensors, schedule buffers, the last text block,
    projection and logit_scale included) loads with its config: no key left over, none missing, every
    weight the file's. Full size: a random v2-1_768 file with v2-inference-v.yaml."""
    from safetensors.torch import save_file

    from ldm.model_loading import load_model_from_config
    from ldm.models.diffusion.schedule import SCHEDULE_BUFFERS

    cfg, model, sd = sd2
    last = model.cond_stage_model.model.layers - 1
    assert f"{OPEN_CLIP_PREFIX}transformer.resblocks.{last}.attn.in_proj_weight" in sd
    assert f"{OPEN_CLIP_PREFIX}logit_scale" in sd and "alphas_cumprod" in sd
    path = tmp_path / "sd2-random.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, str(path))
    loaded = load_model_from_config(cfg, path, with_embedding_manager=False)
    assert loaded.parameterization == model.parameterization
    got = loaded.state_dict()
    assert set(got) == set(sd)
    different = [k for k in sd if k not in SCHEDULE_BUFFERS and not torch.equal(got[k], sd[k].half().float())]
    assert not different, different[:3]
    del loaded, got
    gc.collect()
