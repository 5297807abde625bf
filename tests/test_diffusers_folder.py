"""Loading a diffusers-format SD 1.x folder (SD 2.x: test_diffusers_folder_sd2.py). The oracle runs the
other way round: our tiny model is converted by diffusers' own single-file converters, instantiated as
diffusers/transformers models and saved with their own `save_pretrained`; reading that folder back must
give our weights exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import SD_CONFIG, TINY_CONFIG, load_config, randomize_, text_state_dict

from ldm.diffusers_folder import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from ldm.errors import CheckpointError, UnsafeCheckpointError
from ldm.model_loading import load_model_from_config
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER, resolve_tokenizer_dir

COMPONENTS = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
FOLDER_FORMATS = [("safetensors", None), ("bin", None), ("safetensors", "fp16")]


def _to_diffusers(sd: dict, cfg) -> tuple[dict, dict, dict, dict]:
    """Our state dict -> (unet config, unet weights, vae config, vae weights) by diffusers' converters."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    container = OmegaConf.to_container(cfg)
    ucfg = create_unet_diffusers_config_from_ldm(container, sd)
    vcfg = create_vae_diffusers_config_from_ldm(container, sd)
    return ucfg, convert_ldm_unet_checkpoint(sd, ucfg), vcfg, convert_ldm_vae_checkpoint(sd, vcfg)


def write_diffusers_folder(model, cfg, folder, fmt: str = "safetensors", variant=None):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    sd = model.state_dict()
    dtype = torch.float16 if variant == "fp16" else torch.float32
    ucfg, unet_sd, vcfg, vae_sd = _to_diffusers(sd, cfg)
    unet, vae = UNet2DConditionModel(**ucfg), AutoencoderKL(**vcfg)
    text = CLIPTextModel(model.cond_stage_model.text_model.config)
    for module, weights in ((unet, unet_sd), (vae, vae_sd), (text, text_state_dict(sd))):
        module.load_state_dict(weights, strict=True)
    for name, module in (("unet", unet), ("vae", vae)):
        module.to(dtype).save_pretrained(folder / name, safe_serialization=fmt == "safetensors", variant=variant)
    text.to(dtype).save_pretrained(folder / "text_encoder", variant=variant)
    if fmt == "bin":  # transformers 5 writes safetensors only; a .bin is what older folders hold
        saved = folder / "text_encoder" / "model.safetensors"
        torch.save(load_file(str(saved)), folder / "text_encoder" / "pytorch_model.bin")
        saved.unlink()
    shutil.copytree(SHIPPED_TOKENIZER, folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def folders(tiny_model, tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    return {
        (fmt, variant): write_diffusers_folder(tiny_model, tiny_config, root / f"{fmt}-{variant}", fmt, variant)
        for fmt, variant in FOLDER_FORMATS
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize("fmt,variant", FOLDER_FORMATS, ids=[f"{f}-{v or 'fp32'}" for f, v in FOLDER_FORMATS])
def test_folder_loads_to_our_exact_weights(tiny_model, folders, fmt, variant):
    folder = folders[(fmt, variant)]
    names = {p.name for p in folder.rglob("*") if p.is_file()}
    suffix = f"{'.fp16' if variant else ''}.{fmt}"
    assert f"diffusion_pytorch_model{suffix}" in names  # the file kind under test is really there
    loaded = load_model_from_config(TINY_CONFIG, folder).state_dict()
    expected = tiny_model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        if variant == "fp16" and key.startswith(COMPONENTS) and value.is_floating_point():
            value = value.half().to(value.dtype)  # what an fp16 file can hold
        assert torch.equal(loaded[key], value), key
    assert resolve_tokenizer_dir(model_path=folder) == folder / "tokenizer"


def test_generate_from_folder_matches_the_ckpt(folders, tiny_ckpt):
    from ldm.generate import Generate

    kw = dict(steps=2, width=64, height=64, seed=11, sampler_name="ddim")
    folder = folders[("safetensors", None)]
    ((image, seed),) = Generate(config=TINY_CONFIG, weights=folder, device="cpu", precision="full").txt2img(
        "a cat", **kw
    )
    ((same, _),) = Generate(config=TINY_CONFIG, weights=tiny_ckpt, device="cpu", precision="full").txt2img(
        "a cat", **kw
    )
    assert seed == 11 and image.size == (64, 64)
    assert image.tobytes() == same.tobytes()


def test_text_encoder_keys_with_or_without_text_model_prefix(tiny_model):
    bare = text_state_dict(tiny_model.state_dict())
    prefixed = {"text_model." + k: v for k, v in bare.items()}
    assert text_encoder_to_ldm(bare) == text_encoder_to_ldm(prefixed)
    assert set(text_encoder_to_ldm(bare)) == {k for k in tiny_model.state_dict() if k.startswith("cond_stage_model.")}
    with pytest.raises(CheckpointError, match="text_projection"):
        text_encoder_to_ldm({**bare, "text_projection.weight": torch.zeros(2, 2)})


def test_vae_legacy_attention_names(tiny_model, tiny_config):
    """diffusers < 0.14 saved the VAE mid attention as query/key/value/proj_attn."""
    sd = tiny_model.state_dict()
    *_, vae_sd = _to_diffusers(sd, tiny_config)
    renames = {"group_norm": "group_norm", "to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in vae_sd.items():
        for new, old in renames.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        legacy[key] = value
    assert any(".query." in k for k in legacy)
    ours = {k: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    for converted in (vae_to_ldm(vae_sd), vae_to_ldm(legacy)):
        assert converted.keys() == ours.keys()
        assert all(torch.equal(converted[k], v) for k, v in ours.items())


def test_unet_levels_without_attention_and_more_res_blocks(tiny_config):
    """SD v1's deepest level has no attention (upsampler at index 1, not 2); the tiny model has attention
    everywhere, so a variant checks that path and num_res_blocks > 1."""
    from ldm.model_loading import build_model

    cfg = OmegaConf.create(OmegaConf.to_container(tiny_config))
    cfg.model.params.unet_config.params.attention_resolutions = [1]
    cfg.model.params.unet_config.params.num_res_blocks = 2
    cfg.model.params.unet_config.params.channel_mult = [1, 2, 2]
    model = randomize_(build_model(cfg.model), seed=3)
    sd = model.state_dict()
    _, unet_sd, _, _ = _to_diffusers(sd, cfg)
    ours = {k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    converted = unet_to_ldm(unet_sd)
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], v) for k, v in ours.items())


def test_sd_v1_layout_maps_on_meta_device():
    """The real SD v1 key set and shapes, without allocating: diffusers' conversion of a meta-device
    model comes back through ours to exactly our keys and shapes."""
    from ldm.util import instantiate_from_config

    cfg = load_config(SD_CONFIG)
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model))
    model_cfg.params.pop("personalization_config", None)
    with torch.device("meta"):
        model = instantiate_from_config(model_cfg)
    sd = model.state_dict()
    _, unet_sd, _, vae_sd = _to_diffusers(sd, cfg)
    converted = {**unet_to_ldm(unet_sd), **vae_to_ldm(vae_sd), **text_encoder_to_ldm(text_state_dict(sd))}
    ours = {k: tuple(v.shape) for k, v in sd.items() if k.startswith(COMPONENTS)}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours


def _copy(folders, tmp_path):
    return shutil.copytree(folders[("safetensors", None)], tmp_path / "model")


def test_folder_without_unet(folders, tmp_path):
    folder = _copy(folders, tmp_path)
    shutil.rmtree(folder / "unet")
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_CONFIG, folder)
    assert "unet/" in _one_line(err.value) and str(folder) in str(err.value)


def test_folder_without_weights_file(folders, tmp_path):
    folder = _copy(folders, tmp_path)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model") as err:
        load_model_from_config(TINY_CONFIG, folder)
    _one_line(err.value)


@pytest.mark.parametrize(
    "family,changes",
    [
        ("SDXL", {"cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time"}),
        ("SDXL refiner", {"cross_attention_dim": 1280, "use_linear_projection": True}),
    ],
)
def test_sdxl_unet_is_refused_before_reading_weights(folders, tmp_path, family, changes):
    """SD 2.x and SDXL folders load (test_diffusers_folder_sd2.py, _sdxl.py); an SD folder whose unet/config.json
    is SDXL's is refused before its weights are read, naming what an SDXL folder has."""
    folder = _copy(folders, tmp_path)
    config_file = folder / "unet" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **changes}))
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_CONFIG, folder)
    assert family in _one_line(err.value) and "text_encoder_2/" in str(err.value)


def test_non_diffusers_folder_is_still_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model_from_config(TINY_CONFIG, tmp_path)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_pickled_bin_that_runs_code_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders[("bin", None)], tmp_path / "model")
    marker = tmp_path / "pwned"
    torch.save(
        {"conv_in.weight": torch.zeros(1), "payload": _Exploit(marker)}, folder / "unet" / "diffusion_pytorch_model.bin"
    )
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model_from_config(TINY_CONFIG, folder)
    assert "diffusion_pytorch_model.bin" in _one_line(err.value)
    assert not marker.exists()
