"""The SDXL side of the benchmark against diffusers' textual_inversion_sdxl.py: the torchvision stand-ins it
needs crop as torchvision does, the random SDXL diffusers folder loads the way the example loads it, and
our side trains with the SDXL config on the same job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_fakes import FAKE_EXAMPLE
from PIL import Image
from sd_helpers import ROOT

from ldm.benchmark import sdxl_folder
from ldm.benchmark.real_example import LAUNCHER, Setup, example_command, main_command
from ldm.benchmark.weights import SDXL_FINETUNE_CONFIG

SCRIPT = ROOT / "scripts" / "benchmark.py"
TINY_SDXL = ROOT / "tests" / "fixtures" / "tiny-sdxl.yaml"
# The shapes of tests/fixtures/tiny-sdxl.yaml, in diffusers' terms, so the folder's checkpoint loads into it.
TINY = {
    "UNET": dict(
        sdxl_folder.UNET,
        sample_size=8,
        block_out_channels=[32, 64, 64],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        layers_per_block=1,
        attention_head_dim=[2, 4, 4],
        transformer_layers_per_block=[1, 1, 2],
        cross_attention_dim=96,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=112,
    ),
    "VAE": dict(
        sdxl_folder.VAE,
        block_out_channels=[32, 32, 32, 32],
        layers_per_block=1,
        sample_size=64,
    ),
    "TEXT_ENCODER": dict(
        sdxl_folder.TEXT_ENCODER,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=32,
    ),
    "TEXT_ENCODER_2": dict(
        sdxl_folder.TEXT_ENCODER_2,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=64,
    ),
}


def _stand_in(name: str):
    sys.path.insert(0, str(LAUNCHER.parent / "lib"))
    try:
        import torchvision.transforms as transforms
    finally:
        sys.path.pop(0)
        for mod in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            sys.modules.pop(mod)
    return getattr(transforms, name)


def test_stand_in_random_crop_draws_as_torchvision():
    random_crop, functional = _stand_in("RandomCrop"), _stand_in("functional")
    image = Image.fromarray(np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert random_crop.get_params(image, (6, 5)) == (0, 0, 6, 5)  # sizes match: nothing is drawn
    assert torch.equal(torch.get_rng_state(), state)
    top, left, h, w = random_crop.get_params(image, (4, 3))
    torch.set_rng_state(state)
    assert (top, left) == (torch.randint(0, 3, (1,)).item(), torch.randint(0, 3, (1,)).item()) and (h, w) == (4, 3)
    got = np.asarray(functional.crop(image, top, left, h, w))
    assert np.array_equal(got, np.asarray(image)[top : top + 4, left : left + 3])


def test_stand_in_center_crop_takes_the_middle():
    center_crop = _stand_in("CenterCrop")
    image = Image.fromarray(np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3))
    assert np.array_equal(np.asarray(center_crop(4)(image)), np.asarray(image)[1:5, 1:5])
    with pytest.raises(ValueError, match="smaller"):
        center_crop(8)(image)


def test_fill_random_is_seeded_finite_and_keeps_position_ids():
    from transformers import CLIPTextConfig, CLIPTextModel

    def build(seed: int) -> torch.nn.Module:
        with torch.device("meta"):
            m = CLIPTextModel(CLIPTextConfig(**TINY["TEXT_ENCODER"]))
        return sdxl_folder.fill_random(m, torch.Generator().manual_seed(seed))

    a, b, c = build(0), build(0), build(1)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y) and torch.isfinite(x.float()).all(), name
    fc1 = next(k for k in a.state_dict() if k.endswith("layers.0.mlp.fc1.weight"))
    assert not torch.equal(a.state_dict()[fc1], c.state_dict()[fc1])
    ids = next(v for k, v in a.named_buffers() if k.endswith("position_ids"))
    assert torch.equal(ids[0], torch.arange(77))
    norm = next(v for k, v in a.state_dict().items() if k.endswith("final_layer_norm.weight"))
    assert torch.equal(norm, torch.ones(32))
    out = a(torch.tensor([[49406, 320, 49407]]), output_hidden_states=True)
    assert out.hidden_states[-2].abs().max() < 100  # fan-in scaled: activations stay in range


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for name, value in TINY.items():
        mp.setattr(sdxl_folder, name, value)
    try:
        yield sdxl_folder.random_sdxl_folder(tmp_path_factory.mktemp("xl") / "tiny-sdxl-diffusers")
    finally:
        mp.undo()


def test_folder_loads_the_way_the_example_loads_it(tiny_folder):
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    scheduler = DDPMScheduler.from_pretrained(tiny_folder, subfolder="scheduler")
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.prediction_type == "epsilon"
    t1 = CLIPTokenizer.from_pretrained(tiny_folder, subfolder="tokenizer")
    t2 = CLIPTokenizer.from_pretrained(tiny_folder, subfolder="tokenizer_2")
    assert t1.pad_token_id == 49407 and t2.pad_token_id == 0  # as SDXL's: CLIP-L pads with EOS, bigG with "!"
    assert t1("a sculpture").input_ids == t2("a sculpture").input_ids
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_folder)
    assert pipe.unet.config.addition_embed_type == "text_time" and pipe.vae.config.scaling_factor == 0.13025
    assert json.loads((tiny_folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert pipe.unet.dtype == torch.float32  # fp32, as the repository's default files


def test_folder_is_written_once(tiny_folder):
    stamp = (tiny_folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert sdxl_folder.random_sdxl_folder(tiny_folder) == tiny_folder
    assert (tiny_folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_our_checkpoint_holds_the_folders_weights_in_the_sgm_layout(tiny_folder, tmp_path):
    from ldm.diffusers_folder import read_diffusers_folder
    from ldm.model_loading import load_model_from_config
    from ldm.safe_load import read_state_dict

    path = sdxl_folder.checkpoint_from_folder(tiny_folder, tmp_path / "xl.safetensors")
    ours = read_state_dict(path)
    assert {k.split(".")[0] for k in ours} == {"model", "first_stage_model", "conditioner"}
    assert (
        "conditioner.embedders.1.model.text_projection" in ours and "model.diffusion_model.label_emb.0.0.weight" in ours
    )
    folder = read_diffusers_folder(tiny_folder)
    assert set(ours) == set(folder)
    for key, value in folder.items():
        assert ours[key].dtype == torch.bfloat16 and torch.equal(ours[key], value.to(torch.bfloat16)), key
    load_model_from_config(TINY_SDXL, path, with_embedding_manager=False)  # strict: no missing or unexpected key


def test_sdxl_sides_train_the_same_job(tmp_path):
    setup = Setup(Path("ex/textual_inversion_sdxl.py"), Path("xl"), Path("xl.safetensors"), Path("c"), model="sdxl")
    ours, theirs = main_command(setup, 9, tmp_path), example_command(setup, 9, tmp_path)
    assert ours[ours.index("--base") + 1] == str(SDXL_FINETUNE_CONFIG)
    assert {"--max_steps=9", "--precision=bf16", "data.params.batch_size=1"} <= set(ours)
    assert {"--max_train_steps=9", "--mixed_precision=bf16", "--train_batch_size=1", "--resolution=256"} <= set(theirs)
    assert theirs[2] == str(Path("ex/textual_inversion_sdxl.py"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "--model", "sdxl"], "--model sdxl runs train --against diffusers"),
        (["train", "--model", "sdxl", "--ckpt", "x.safetensors"], "drop --ckpt"),
        (["train", "--only", "ours", "--before", "."], "drop --only"),
    ],
)
def test_sdxl_bad_input_is_one_line(args, needle):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_one_side_alone_has_figures_and_no_ratios(monkeypatch, tmp_path):
    from ldm.benchmark import real_example

    def fake(s, steps, out, root=None):
        return [sys.executable, "-c", FAKE_EXAMPLE, str(steps), "0.1"]

    monkeypatch.setattr(real_example, "main_command", fake)
    monkeypatch.setattr(real_example, "example_command", fake)
    result = real_example.compare(Setup(tmp_path, tmp_path, tmp_path, tmp_path), 1, 1, 4, 120, ("diffusers",))
    assert set(result["sides"]) == {"diffusers"} and result["ratios"] == {}
    assert set(result["rounds"][0]["runs"]) == {"diffusers_short", "diffusers_long"}
    for clock in ("step_in_run_s", "step_wall_s"):
        assert result["sides"]["diffusers"][clock]["median"] == pytest.approx(0.1, abs=0.08), clock
