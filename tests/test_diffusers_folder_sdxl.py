"""Loading a diffusers-format SDXL folder (unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/,
tokenizer_2/, model_index.json: StableDiffusionXLPipeline). The folder is made on diffusers' side: our tiny
SDXL model (tests/fixtures/tiny-sdxl.yaml, random weights) converted by diffusers' own single-file
converters into UNet2DConditionModel (text_time), AutoencoderKL, CLIPTextModel and
CLIPTextModelWithProjection, put in a StableDiffusionXLPipeline and saved with `save_pretrained`. Read back
it must give our weights exactly (all but bigG's unused `logit_scale`, which diffusers does not keep), and
the loaded model must give the pipeline modules' outputs (UNet with text_embeds + time_ids, both text
encoders' hidden_states[-2] and pooled text_embeds)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import ROOT, load_config, randomize_
from sdxl_text_helpers import big_g_twin, clip_l_twin

from ldm.diffusers_folder import read_diffusers_folder
from ldm.diffusers_sdxl import BIG_G_PREFIX, is_sdxl_folder
from ldm.errors import CheckpointError
from ldm.model_loading import build_model, load_model_from_config
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

TINY_SDXL = ROOT / "tests" / "fixtures" / "tiny-sdxl.yaml"
TOL = 1e-4
PROMPTS = ["a photograph of an astronaut riding a horse", "an oil painting of a fox, highly detailed!!!", ""]
LOGIT_SCALE = BIG_G_PREFIX + "logit_scale"


def _pipeline(model, cfg):
    """Our model -> a StableDiffusionXLPipeline, through diffusers' converters only."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from transformers import CLIPTokenizer

    sd = model.state_dict()
    container = OmegaConf.to_container(cfg)
    ucfg = create_unet_diffusers_config_from_ldm(container, sd, image_size=64)
    # diffusers only recognises SDXL by its real context width (2048); the tiny one has size embedders of 8.
    ucfg.update(class_embed_type=None, addition_embed_type="text_time", addition_time_embed_dim=8)
    vcfg = create_vae_diffusers_config_from_ldm(container, sd, image_size=64)
    unet, vae = UNet2DConditionModel(**ucfg), AutoencoderKL(**vcfg)
    for module, weights in ((unet, convert_ldm_unet_checkpoint(sd, ucfg)), (vae, convert_ldm_vae_checkpoint(sd, vcfg))):
        result = module.load_state_dict(weights, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    clip_l, big_g = model.conditioner.text_encoders
    tokenizer = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), local_files_only=True)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), local_files_only=True, pad_token="!")
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=clip_l_twin(clip_l, sd),
        text_encoder_2=big_g_twin(big_g, sd),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(),
    )


@pytest.fixture(scope="module")
def ours():
    cfg = load_config(TINY_SDXL)
    torch.manual_seed(0)
    return cfg, randomize_(build_model(cfg.model), seed=11).eval()


@pytest.fixture(scope="module")
def folder(ours, tmp_path_factory):
    cfg, model = ours
    pipe = _pipeline(model, cfg)
    path = tmp_path_factory.mktemp("sdxl-diffusers") / "tiny-sdxl"
    pipe.save_pretrained(path)
    return pipe, path


@pytest.fixture(scope="module")
def loaded(folder):
    return load_model_from_config(TINY_SDXL, folder[1])


def test_folder_is_sdxl_and_loads_to_our_exact_weights(ours, folder, loaded):
    _, path = folder
    assert json.loads((path / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert (path / "text_encoder_2").is_dir() and (path / "tokenizer_2").is_dir() and is_sdxl_folder(path)
    expected = {k: v for k, v in ours[1].state_dict().items() if k != LOGIT_SCALE}
    got = loaded.state_dict()
    assert got.keys() == expected.keys() and LOGIT_SCALE in ours[1].state_dict()
    assert any(k.startswith("model.diffusion_model.label_emb.0.") for k in got)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_tokenizers_come_from_the_folder_and_bang_stays_text(folder, loaded, tmp_path):
    from ldm.modules.encoders.open_clip_tokenizer import load_open_clip_tokenizer

    _, path = folder
    clip_l, big_g = loaded.conditioner.text_encoders
    assert clip_l.tokenizer.name_or_path == str(path / "tokenizer")
    assert (clip_l.tokenizer.pad_token_id, big_g.tokenizer.pad_token_id) == (49407, 0)
    (bang,) = clip_l.tokenizer("!!", add_special_tokens=False)["input_ids"]
    # transformers 5 saved tokenizer_2 as tokenizer.json with "!" an added special token (its pad): it would
    # split "!!" into two pads, so the same vocabulary is read from the shipped files instead.
    assert not (path / "tokenizer_2" / "vocab.json").exists()
    assert big_g.tokenize("wow!!")[0, :4].tolist() == [49406, 2781, bang, 49407]
    # A tokenizer_2 in the older vocab.json + merges.txt form (pad "!" in its special tokens) is used.
    older = tmp_path / "older"
    shutil.copytree(SHIPPED_TOKENIZER, older / "tokenizer_2")
    (older / "tokenizer_2" / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    tokenizer_2 = load_open_clip_tokenizer(model_path=older, subfolder="tokenizer_2")
    assert tokenizer_2.name_or_path == str(older / "tokenizer_2")
    assert tokenizer_2("wow!!", add_special_tokens=False)["input_ids"] == [2781, bang]


@torch.no_grad()
def test_loaded_model_gives_the_pipeline_modules_outputs(folder, loaded):
    pipe, _ = folder
    batch = {"txt": PROMPTS}
    sizes = {
        "original_size_as_tuple": torch.tensor([[64, 96], [128, 64], [64, 64]]),
        "crop_coords_top_left": torch.tensor([[0, 16], [8, 0], [0, 0]]),
        "target_size_as_tuple": torch.tensor([[64, 64]] * 3),
    }
    cond = loaded.conditioner({**batch, **sizes})
    # Our ids on both sides: the pipeline's tokenizer_2 splits "!!!" into "!" pads (diffusers #4153).
    ids = [encoder.tokenize(PROMPTS) for encoder in loaded.conditioner.text_encoders]
    first = pipe.text_encoder(ids[0], output_hidden_states=True).hidden_states[-2]
    second = pipe.text_encoder_2(ids[1], output_hidden_states=True)
    context = torch.cat([first, second.hidden_states[-2]], dim=-1)
    assert (cond["crossattn"] - context).abs().max() <= TOL * context.abs().max()
    pooled = second.text_embeds
    assert (cond["vector"][:, : pooled.shape[1]] - pooled).abs().max() <= TOL * pooled.abs().max()

    time_ids = torch.cat([sizes[k] for k in sizes], dim=1).float()  # diffusers: original, crop, target
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([10, 500, 900])
    mine = loaded.apply_model(x, t, cond)
    theirs = pipe.unet(
        x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
    )
    assert mine.abs().mean() > 0.1
    assert (mine - theirs.sample).abs().max() <= TOL * theirs.sample.abs().max()


def _copy(path, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(path, target)
    return target


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


def test_refiner_folder_is_refused(folder, tmp_path):
    refiner = _copy(folder[1], tmp_path, "refiner")
    shutil.rmtree(refiner / "text_encoder")
    with pytest.raises(CheckpointError) as err:
        read_diffusers_folder(refiner)
    assert "refiner" in _one_line(err.value)


def test_missing_second_text_encoder_is_named(folder, tmp_path):
    broken = _copy(folder[1], tmp_path, "broken")
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(CheckpointError) as err:
        read_diffusers_folder(broken)
    assert "text_encoder_2/" in _one_line(err.value)


def test_checkpoint_written_from_the_folder_loads(folder, loaded, tmp_path):
    """A file converted from a diffusers folder (e.g. by the benchmark, or diffusers' own
    convert_diffusers_to_original_sdxl.py) has everything but bigG's unused logit_scale: it loads."""
    from safetensors.torch import save_file

    sd = read_diffusers_folder(folder[1])
    assert LOGIT_SCALE not in sd and BIG_G_PREFIX + "text_projection" in sd
    path = tmp_path / "from-folder.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    model = load_model_from_config(TINY_SDXL, path)
    assert not model.conditioner.text_encoders[1].model.has_logit_scale
    got = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(got[key], value), key


def test_full_size_sdxl_folder_layout_maps_onto_sd_xl_base_keys():
    """On the meta device (no weights): the real SDXL diffusers modules (configs from diffusers' own
    create_*_config_from_ldm on our sdxl-base-inference.yaml, 1024 px) rename onto exactly the keys and
    shapes of our full-size SDXL model, all but bigG's logit_scale."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )
    from sdxl_text_helpers import SDXL_CONFIG
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ldm.diffusers_folder import unet_to_ldm, vae_to_ldm
    from ldm.diffusers_sd2 import text_encoder_to_open_clip
    from ldm.diffusers_sdxl import CLIP_L_PREFIX, _clip_l_to_ldm
    from ldm.model_loading import _build_on_meta
    from ldm.modules.encoders.modules import VIT_L14_TEXT

    cfg = load_config(SDXL_CONFIG)
    networks = ("model.diffusion_model.", "first_stage_model.", "conditioner.")  # not the noise schedule
    ours = {k: tuple(v.shape) for k, v in _build_on_meta(cfg.model).state_dict().items() if k.startswith(networks)}
    container = OmegaConf.to_container(cfg)
    meta_sd = {k: torch.empty(s, device="meta") for k, s in ours.items()}
    ucfg = create_unet_diffusers_config_from_ldm(container, meta_sd, image_size=1024)
    assert ucfg["addition_embed_type"] == "text_time" and ucfg["transformer_layers_per_block"] == [1, 2, 10]
    big_g = CLIPTextConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        projection_dim=1280,
        hidden_act="gelu",
        max_position_embeddings=77,
    )
    with torch.device("meta"):
        parts = {
            "unet": (UNet2DConditionModel(**ucfg), unet_to_ldm),
            "vae": (
                AutoencoderKL(**create_vae_diffusers_config_from_ldm(container, meta_sd, image_size=1024)),
                vae_to_ldm,
            ),
            "text_encoder": (CLIPTextModel(CLIPTextConfig(**VIT_L14_TEXT)), _clip_l_to_ldm),
            "text_encoder_2": (
                CLIPTextModelWithProjection(big_g),
                lambda sd, source: text_encoder_to_open_clip(sd, source, BIG_G_PREFIX, projection=True),
            ),
        }
    converted = {}
    for name, (module, convert) in parts.items():
        converted.update(convert(module.state_dict(), source=name))
    assert f"{CLIP_L_PREFIX}encoder.layers.11.mlp.fc2.weight" in converted
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: s for k, s in ours.items() if k != LOGIT_SCALE}


def test_v_prediction_folder_with_the_eps_config_says_what_to_set(folder, tmp_path):
    vpred = _copy(folder[1], tmp_path, "vpred")
    scheduler = vpred / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_SDXL, vpred)
    message = _one_line(err.value)
    assert "v_prediction" in message and "parameterization: v" in message and "sdxl-base-inference.yaml" in message


def test_generate_from_the_folder_matches_the_checkpoint(ours, folder, tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    from ldm.generate import Generate

    ckpt = tmp_path / "tiny-sdxl.safetensors"
    save_file({k: v.contiguous() for k, v in ours[1].state_dict().items()}, str(ckpt))
    images = []
    for weights in (folder[1], ckpt):
        gen = Generate(config=TINY_SDXL, weights=weights, device="cpu", precision="full", sampler_name="ddim")
        ((image, seed),) = gen.prompt2image("a cat, highly detailed!!", steps=2, seed=3)
        images.append(np.asarray(image))
    assert seed == 3 and images[0].shape == (64, 64, 3) and images[0].std() > 1
    assert np.array_equal(images[0], images[1])
