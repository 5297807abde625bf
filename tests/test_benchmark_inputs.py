"""The inputs of the benchmark against diffusers' example: the diffusers folder holds exactly our weights,
in the layout the example loads, and the concept folder is what both training scripts read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sd_helpers import TINY_CONFIG

from ldm.benchmark.example_inputs import concept_folder, diffusers_folder
from ldm.diffusers_folder import read_diffusers_folder

NETWORKS = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")


@pytest.fixture(scope="module")
def folder(tiny_ckpt, tmp_path_factory):
    return diffusers_folder(tiny_ckpt, tmp_path_factory.mktemp("bench") / "tiny-diffusers", TINY_CONFIG)


def test_folder_holds_our_weights_exactly(folder, tiny_model):
    ours = {k: v for k, v in tiny_model.state_dict().items() if k.startswith(NETWORKS)}
    ours.pop("cond_stage_model.transformer.text_model.embeddings.position_ids", None)
    back = read_diffusers_folder(folder)
    back.pop("cond_stage_model.transformer.text_model.embeddings.position_ids", None)
    assert set(back) == set(ours)
    for key, value in ours.items():
        assert back[key].dtype == torch.float32  # fp32, as SD v1's own folders
        assert torch.equal(back[key], value.float()), key


def test_folder_loads_the_way_the_example_loads_it(folder):
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.prediction_type == "epsilon"
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    assert tokenizer("a photo of a sculpture").input_ids[0] == 49406


def test_folder_is_written_once(folder, tiny_ckpt):
    stamp = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert diffusers_folder(tiny_ckpt, folder, TINY_CONFIG) == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_concept_folder_is_seeded_images_larger_than_training_size(tmp_path):
    a, b = concept_folder(tmp_path / "a", n_images=3, size=96), concept_folder(tmp_path / "b", n_images=3, size=96)
    files = sorted(p.name for p in a.iterdir())
    assert files == ["00.jpg", "01.jpg", "02.jpg"] and files == sorted(p.name for p in b.iterdir())
    for name in files:
        with Image.open(a / name) as x, Image.open(b / name) as y:
            assert x.size == (96, 96) and x.mode == "RGB"
            assert np.array_equal(np.asarray(x), np.asarray(y))
