"""Model family from a state dict and from a config; a file of another family than its config is one line
naming the config to pass (SD 2.x: both the 768 v-model and the 512-base config, since nothing says v)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from sd_helpers import ROOT, TINY_CONFIG, TINY_SDXL_CONFIG, TINY_V2_CONFIG, load_config

from ldm.errors import CheckpointError
from ldm.model_family import CROSS_ATTN_KEY, SD1, SD2, SDXL, family_of_config, family_of_state_dict
from ldm.model_loading import load_model_from_config

V2_HINT = ("configs/stable-diffusion/v2-inference-v.yaml (768 v-model)", "v2-inference.yaml (512-base)")


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def test_family_of_the_tiny_models_by_their_text_encoder_keys(tiny_model, tiny_v2_model):
    assert family_of_state_dict(tiny_model.state_dict()) == SD1
    assert family_of_state_dict(tiny_v2_model.state_dict()) == SD2


def test_family_of_sdxl_and_of_unet_only_files_by_the_cross_attention_width():
    assert family_of_state_dict({"conditioner.embedders.1.model.token_embedding.weight": _meta(49408, 1280)}) == SDXL
    for width, family in ((768, SD1), (1024, SD2), (2048, SDXL)):
        assert family_of_state_dict({CROSS_ATTN_KEY: _meta(320, width)}) == family
    assert family_of_state_dict({CROSS_ATTN_KEY: (320, 1024)}) == SD2  # shapes do as well as tensors
    assert family_of_state_dict({CROSS_ATTN_KEY: _meta(320, 32)}) is None
    assert family_of_state_dict({"something.else": _meta(3)}) is None


@pytest.mark.parametrize(
    "path, family",
    [
        (TINY_CONFIG, SD1),
        (TINY_V2_CONFIG, SD2),
        (ROOT / "configs/stable-diffusion/v1-inference.yaml", SD1),
        (ROOT / "configs/stable-diffusion/v2-inference.yaml", SD2),
        (ROOT / "configs/stable-diffusion/v2-inference-v.yaml", SD2),
        (ROOT / "configs/stable-diffusion/v2-finetune_style.yaml", SD2),
    ],
)
def test_family_of_a_config_is_its_text_encoder(path, family):
    assert family_of_config(load_config(path).model) == family


def test_stabilitys_target_string_builds_our_open_clip_encoder():
    config = load_config(TINY_V2_CONFIG).model
    config.params.cond_stage_config.target = "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder"
    assert family_of_config(config) == SD2
    from ldm.model_loading import build_model
    from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder

    assert isinstance(build_model(config, random_init=False).cond_stage_model, FrozenOpenCLIPEmbedder)


def _one_line_error(config, ckpt) -> str:
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(config, ckpt)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message
    return message


def test_sd2_file_with_a_v1_config_names_both_v2_configs(tiny_v2_ckpt):
    message = _one_line_error(TINY_CONFIG, tiny_v2_ckpt)
    assert f"is an {SD2} model but the config is for {SD1}" in message
    assert all(hint in message for hint in V2_HINT)


def test_sd1_file_with_a_v2_config_names_the_v1_config(tiny_ckpt):
    message = _one_line_error(TINY_V2_CONFIG, tiny_ckpt)
    assert f"is an {SD1} model but the config is for {SD2}" in message and "v1-inference.yaml" in message


SDXL_HINT = "configs/stable-diffusion/sdxl-base-inference.yaml"


@pytest.mark.parametrize("config", [TINY_CONFIG, TINY_V2_CONFIG])
def test_sdxl_file_with_an_sd1_or_sd2_config_names_the_sdxl_config(tiny_sdxl_ckpt, config):
    message = _one_line_error(config, tiny_sdxl_ckpt)
    assert f"is an {SDXL} model but the config is for" in message and SDXL_HINT in message


@pytest.mark.parametrize(
    "ckpt, family, hint", [("tiny_ckpt", SD1, "v1-inference.yaml"), ("tiny_v2_ckpt", SD2, V2_HINT[0])]
)
def test_sd1_or_sd2_file_with_the_sdxl_config_names_theirs(request, ckpt, family, hint):
    path = request.getfixturevalue(ckpt)
    message = _one_line_error(TINY_SDXL_CONFIG, path)
    assert f"is an {family} model but the config is for {SDXL}" in message and hint in message


def test_family_of_sdxl_configs_is_their_conditioner(tiny_sdxl_model):
    assert family_of_config(load_config(TINY_SDXL_CONFIG).model) == SDXL
    assert family_of_config(load_config(ROOT / SDXL_HINT).model) == SDXL
    assert family_of_state_dict(tiny_sdxl_model.state_dict()) == SDXL


def test_a_wrong_sized_file_of_the_right_family_names_the_family(tiny_v2_model, tmp_path):
    sd = {k: v for k, v in tiny_v2_model.state_dict().items() if "resblocks.2." not in k}
    path = tmp_path / "short.ckpt"
    torch.save({"state_dict": sd}, path)
    message = _one_line_error(TINY_V2_CONFIG, path)
    assert "missing keys" in message and f"is it an {SD2} model?" in message


@pytest.mark.parametrize("ckpt, hints", [("tiny_v2_ckpt", V2_HINT), ("tiny_sdxl_ckpt", (SDXL_HINT,))])
def test_txt2img_with_the_default_v1_config_and_another_familys_file_says_one_line(request, ckpt, hints, tmp_path):
    """The default config is the full-size v1 one; the family check refuses before any weight is allocated."""
    out = tmp_path / "out"
    path = request.getfixturevalue(ckpt)
    args = ["--prompt", "a cat", "--ckpt", path, "--outdir", out, "--H", "64", "--W", "64", "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "scripts/txt2img.py", *map(str, args), "--ddim_steps", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and all(hint in lines[0] for hint in hints)
    assert not list(out.rglob("*.png"))
