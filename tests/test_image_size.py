"""Default image size per model: the config's training size (latent side x 8) when the user gives none."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image
from sd_helpers import ROOT, TINY_CONFIG, TINY_V2_CONFIG, load_config

from ldm.errors import ConfigError
from ldm.image_size import default_image_side, resolve_size

CONFIGS = ROOT / "configs" / "stable-diffusion"


@pytest.mark.parametrize(
    "path, side",
    [
        (CONFIGS / "v1-inference.yaml", 512),
        (CONFIGS / "v2-inference.yaml", 512),
        (CONFIGS / "v2-inference-v.yaml", 768),
        (CONFIGS / "v2-finetune.yaml", 512),
        (TINY_CONFIG, 64),  # no top-level image_size: the UNet's 8 x the VAE's 8
        (TINY_V2_CONFIG, 64),
    ],
)
def test_default_side_is_the_configs_training_size(path, side):
    assert default_image_side(path) == side
    assert default_image_side(load_config(path)) == side  # a loaded config as well as a path


def test_the_latent_factor_follows_the_vae_and_odd_configs_fall_back_to_512():
    config = load_config(TINY_V2_CONFIG)
    config.model.params.image_size = 12
    config.model.params.first_stage_config.params.ddconfig.ch_mult = [1, 1, 1]
    assert default_image_side(config) == 48
    assert default_image_side(OmegaConf.create({"model": {"params": {}}})) == 512
    with pytest.raises(ConfigError, match="config not found"):
        default_image_side(ROOT / "nope.yaml")


def test_resolve_keeps_what_the_user_gave():
    v = CONFIGS / "v2-inference-v.yaml"
    assert resolve_size(None, None, v) == (768, 768)
    assert resolve_size(640, None, v) == (640, 768)
    assert resolve_size(None, 320, v) == (768, 320)
    assert resolve_size(256, 320, ROOT / "never-read.yaml") == (256, 320)  # both given: the config is not read


def test_generate_defaults_to_the_configs_size(tiny_v2_model, tmp_path):
    from ldm.generate import Generate

    config = load_config(TINY_V2_CONFIG)
    config.model.params.image_size = 6  # 48 px: not the old fixed 512, not the tiny configs' 64
    path = tmp_path / "tiny-v2-48px.yaml"
    OmegaConf.save(config, path)
    gen = Generate(config=path, model=tiny_v2_model, device="cpu", precision="full", sampler_name="ddim")
    ((image, _),) = gen.prompt2image("a cat", steps=2, seed=1)
    assert image.size == (48, 48)
    ((image, _),) = gen.prompt2image("a cat", steps=2, seed=1, width=64)
    assert image.size == (64, 48)


def test_txt2img_without_sizes_uses_the_configs(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    args = ["--prompt", "a cat", "--config", TINY_CONFIG, "--ckpt", tiny_ckpt, "--outdir", out]
    proc = subprocess.run(
        [sys.executable, "scripts/txt2img.py", *map(str, args), "--ddim_steps", "2", "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = sorted((out / "samples").glob("*.png"))
    assert samples
    with Image.open(samples[0]) as image:
        assert image.size == (64, 64)
