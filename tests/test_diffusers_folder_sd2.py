"""Loading a diffusers-format SD 2.x folder. The folder is made on diffusers' side: a tiny SD 2.x pipeline
(UNet with linear projections and head width 16, AutoencoderKL, a gelu CLIPTextModel with one block fewer
than our tower, as diffusers stores SD 2's text encoder), random weights, saved with `save_pretrained`.
Loaded through our loader with tiny-v2.yaml, our model gives the diffusers modules' outputs to 1e-4."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import TINY_V2_CONFIG, TINY_V2_V_CONFIG, load_config, randomize_

from ldm.diffusers_sd2 import PREFIX, text_encoder_to_open_clip
from ldm.errors import CheckpointError
from ldm.model_loading import build_model, load_model_from_config
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

TOL = 1e-4
PROMPTS = ["a photograph of an astronaut riding a horse", "an oil painting of a fox, highly detailed!!!", ""]


def _diffusers_modules(seed: int = 5):
    """Tiny SD 2.x modules built from diffusers/transformers classes; configs from diffusers' own
    create_*_config_from_ldm on tiny-v2.yaml, so the shapes are SD 2.x's at tiny size."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = load_config(TINY_V2_CONFIG)
    shapes = build_model(cfg.model, random_init=False).state_dict()  # only read for image sizes
    container = OmegaConf.to_container(cfg)
    ucfg = create_unet_diffusers_config_from_ldm(container, shapes)
    assert ucfg["use_linear_projection"] and ucfg["cross_attention_dim"] == 32
    text = cfg.model.params.cond_stage_config.params.text_config
    tcfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=text.width,
        intermediate_size=4 * text.width,
        num_hidden_layers=text.layers - 1,  # what diffusers keeps of SD 2's tower
        num_attention_heads=text.heads,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    modules = (
        UNet2DConditionModel(**ucfg),
        AutoencoderKL(**create_vae_diffusers_config_from_ldm(container, shapes)),
        CLIPTextModel(tcfg),
    )
    return tuple(randomize_(m, seed=seed).eval() for m in modules)


def _write(folder, unet, vae, text, prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    DDIMScheduler(prediction_type=prediction_type).save_pretrained(folder / "scheduler")
    shutil.copytree(SHIPPED_TOKENIZER, folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    modules = _diffusers_modules()
    root = tmp_path_factory.mktemp("sd2-diffusers")
    return modules, _write(root / "eps", *modules), _write(root / "v", *modules, prediction_type="v_prediction")


@pytest.fixture(scope="module")
def ours(pipeline):
    return load_model_from_config(TINY_V2_CONFIG, pipeline[1])


def test_text_encoder_is_built_without_the_block_and_projection_diffusers_drops(ours):
    encoder = ours.cond_stage_model
    assert encoder.model.layers == 2 and encoder.layer == "last" and encoder.n_blocks == 2
    keys = ours.state_dict()
    assert f"{PREFIX}transformer.resblocks.1.attn.in_proj_weight" in keys
    assert not any(k.startswith((f"{PREFIX}text_projection", f"{PREFIX}logit_scale")) for k in keys)


@torch.no_grad()
def test_unet_vae_and_text_match_the_diffusers_modules(pipeline, ours):
    (unet, vae, text), _, _ = pipeline
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 700]), torch.randn(2, 77, 32, generator=g)
    mine = ours.apply_model(x, t, ctx)
    assert mine.abs().mean() > 0.1
    assert (mine - unet(x, t, encoder_hidden_states=ctx).sample).abs().max().item() <= TOL
    z = torch.randn(1, 4, 8, 8, generator=g)
    decoded = ours.first_stage_model.decode(z)
    assert decoded.std() > 0.05 and (decoded - vae.decode(z).sample).abs().max().item() <= TOL
    ids = ours.cond_stage_model.tokenize(PROMPTS)
    assert (ids == 0).any()  # OpenCLIP pads with 0
    context = ours.cond_stage_model(PROMPTS)
    assert context.abs().mean() > 0.1
    assert (context - text(input_ids=ids).last_hidden_state).abs().max().item() <= TOL


def test_same_function_as_the_full_tower_at_penultimate(pipeline, ours):
    """Our full tower (L blocks, penultimate) with the folder's weights plus any last block conditions
    exactly as the folder's L-1 blocks with layer last: the dropped block was never used."""
    full = build_model(load_config(TINY_V2_CONFIG).model, random_init=True).cond_stage_model
    loaded = {k.removeprefix("cond_stage_model."): v for k, v in ours.state_dict().items() if k.startswith(PREFIX)}
    missing = full.load_state_dict(loaded, strict=False).missing_keys
    assert missing and all(".resblocks.2." in k or "text_projection" in k or "logit_scale" in k for k in missing)
    with torch.no_grad():
        assert torch.equal(full.eval()(PROMPTS), ours.cond_stage_model(PROMPTS))


def test_v_folder_needs_the_v_config(pipeline):
    _, _, v_folder = pipeline
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_V2_CONFIG, v_folder)
    message = str(err.value)
    assert "\n" not in message and "v_prediction" in message and "v2-inference-v.yaml" in message
    assert load_model_from_config(TINY_V2_V_CONFIG, v_folder).parameterization == "v"


def test_sd2_folder_with_a_v1_config_names_the_v2_configs(pipeline):
    from sd_helpers import TINY_CONFIG

    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_CONFIG, pipeline[1])
    assert "SD 2.x model but the config is for SD 1.x" in str(err.value) and "v2-inference.yaml" in str(err.value)


def test_config_conditioning_on_the_last_block_is_refused(pipeline, tmp_path):
    config = load_config(TINY_V2_CONFIG)
    config.model.params.cond_stage_config.params.layer = "last"
    with pytest.raises(CheckpointError, match="layer: penultimate") as err:
        load_model_from_config(config, pipeline[1])
    assert "\n" not in str(err.value)


def test_text_keys_with_or_without_prefix_and_strict(pipeline):
    (_, _, text), _, _ = pipeline
    bare = {k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    prefixed = {"text_model." + k: v for k, v in bare.items()}
    converted = text_encoder_to_open_clip(bare)
    assert converted.keys() == text_encoder_to_open_clip(prefixed).keys()
    q = bare["encoder.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(converted[f"{PREFIX}transformer.resblocks.0.attn.in_proj_weight"][: q.shape[0]], q)
    with pytest.raises(CheckpointError, match="unexpected key"):
        text_encoder_to_open_clip({**bare, "text_projection.weight": torch.zeros(2, 2)})
    del bare["encoder.layers.1.self_attn.v_proj.bias"]
    with pytest.raises(CheckpointError, match="v_proj"):
        text_encoder_to_open_clip(bare)


def test_generate_from_the_folder(pipeline):
    from ldm.generate import Generate

    gen = Generate(config=TINY_V2_CONFIG, weights=pipeline[1], device="cpu", precision="full", sampler_name="ddim")
    ((image, seed),) = gen.prompt2image("a cat", steps=2, seed=3)
    assert seed == 3 and image.size == (64, 64)  # the tiny config's size
