"""Generate and the tools on the tiny SDXL: the UNet gets the context and the vector for cond and uncond
(an empty negative is zeros, the size part says the generated size), the default size comes from the
config (1024 for sdxl-base-inference.yaml), clip_l/clip_g embedding files are spliced into both
encoders, img2img runs, scripts/invoke.py generates from an SDXL checkpoint with such a file, and
compare_embeddings and the training sample grids (log_images) work on SDXL."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sd_helpers import ROOT, SDXL_CONFIG, TINY_SDXL_CONFIG

from ldm.evaluation.compare_embeddings import compare_embeddings
from ldm.generate import Generate
from ldm.image_size import resolve_size
from ldm.model_loading import load_model_from_config
from ldm.prompts import Conditioner
from ldm.training.log_images import log_images

L, P = 32, 64  # the tiny SDXL's CLIP-L width and pooled width
TINY_SDXL_FINETUNE = ROOT / "tests" / "fixtures" / "tiny-sdxl-finetune.yaml"  # placeholder "*", 128 px


@pytest.fixture(scope="module")
def gen(tiny_sdxl_model):
    return Generate(config=TINY_SDXL_CONFIG, model=tiny_sdxl_model, device="cpu", precision="full")


@pytest.fixture
def recorded(tiny_sdxl_model, monkeypatch):
    """The cond of every UNet call (the shared model is restored afterwards)."""
    calls = []
    real = tiny_sdxl_model.apply_model
    monkeypatch.setattr(tiny_sdxl_model, "apply_model", lambda x, t, c: calls.append(c) or real(x, t, c))
    return calls


def cat_rows(model) -> dict[str, torch.Tensor]:
    """An SDXL embedding file's tensors that stand for the word "cat" exactly, in both encoders."""
    ids = model.text_encoders[0].tokenizer("cat", add_special_tokens=False)["input_ids"]
    rows = [e.token_embedding.weight[ids].detach().clone().contiguous() for e in model.text_encoders]
    return {"clip_l": rows[0], "clip_g": rows[1]}


def run(gen: Generate, prompt: str, **kwargs) -> np.ndarray:
    options = dict(steps=2, seed=3, sampler_name="k_euler", width=96, height=64) | kwargs
    ((image, _),) = gen.prompt2image(prompt, **options)
    return np.asarray(image)


def test_the_unet_gets_context_and_size_vector_for_cond_and_a_zero_uncond(gen, tiny_sdxl_model, recorded):
    image = run(gen, "a red cat", negative_prompt="")
    assert image.shape == (64, 96, 3)
    cond = recorded[0]
    assert set(cond) == {"crossattn", "vector"} and cond["vector"].shape == (2, 112)
    uncond_ctx, cond_ctx = cond["crossattn"].chunk(2)
    uncond_y, cond_y = cond["vector"].chunk(2)
    assert uncond_ctx.eq(0).all() and uncond_y[:, :P].eq(0).all()  # empty negative: zeros, as SDXL was trained
    with torch.no_grad():
        expected = Conditioner(tiny_sdxl_model)(["a red cat"], target_size=(64, 96))
    torch.testing.assert_close(cond_ctx, expected["crossattn"], rtol=0, atol=0)
    torch.testing.assert_close(cond_y, expected["vector"], rtol=0, atol=0)
    assert torch.equal(uncond_y[:, P:], cond_y[:, P:])  # the size part: original = target = (64, 96), crop 0


def test_default_size_from_the_config_and_1024_for_sdxl_base(gen, recorded):
    assert resolve_size(None, None, SDXL_CONFIG) == (1024, 1024)
    ((image, _),) = gen.prompt2image("a cat", steps=1, seed=0, sampler_name="k_euler", cfg_scale=1.0)
    assert image.size == (64, 64)  # tiny-sdxl.yaml: image_size 8 (latent) -> 64 px
    sizes = recorded[0]["vector"][:, P:]
    with torch.no_grad():
        square = Conditioner(gen.model)(["a cat"], target_size=(64, 64))["vector"][:, P:]
    assert torch.equal(sizes, square)


def test_a_long_prompt_and_a_negative_reach_the_unet_chunked_for_both_encoders(gen, tiny_sdxl_model, recorded):
    long_ = "a (red:1.2) cat, " + " ".join(["green dog"] * 40)  # > 75 tokens: two chunks
    run(gen, long_, negative_prompt="blurry", steps=1, width=64)
    cond = recorded[0]
    assert cond["crossattn"].shape == (2, 154, 96)
    with torch.no_grad():
        expected = Conditioner(tiny_sdxl_model)([long_, "blurry"], target_size=(64, 64))
    torch.testing.assert_close(cond["crossattn"][1], expected["crossattn"][0], rtol=0, atol=0)
    # the one-chunk negative, batched with the prompt, is padded with an empty prompt's chunk (A1111)
    torch.testing.assert_close(cond["crossattn"][0], expected["crossattn"][1], rtol=0, atol=0)
    assert cond["crossattn"][0, :77].abs().max() > 0
    torch.testing.assert_close(cond["vector"], expected["vector"].flip(0), rtol=0, atol=0)
    assert cond["vector"][0, :P].abs().max() > 0


def test_a_clip_l_clip_g_file_is_spliced_into_both_encoders(tiny_sdxl_model, tmp_path):
    path = tmp_path / "mything.safetensors"
    save_file(cat_rows(tiny_sdxl_model), str(path))
    gen = Generate(
        config=TINY_SDXL_CONFIG, model=tiny_sdxl_model, device="cpu", precision="full", embedding_paths=[path]
    )
    word = run(gen, "a photo of a cat", steps=1, width=64)
    assert np.array_equal(run(gen, "a photo of a mything", steps=1, width=64), word)
    assert not np.array_equal(run(gen, "a photo of a dog", steps=1, width=64), word)
    assert gen.conditioner.used_embeddings("a photo of a mything") == ["mything"]


def test_img2img_on_sdxl(gen):
    init = Image.new("RGB", (64, 64), (30, 160, 90))
    calls = []
    ((image, _),) = gen.img2img(
        "a cat",
        init,
        strength=0.5,
        steps=2,
        seed=1,
        width=64,
        height=64,
        cfg_scale=1.0,
        sampler_name="k_euler",
        step_callback=lambda info: calls.append(info["i"]),
    )
    assert image.size == (64, 64) and len(calls) == 1


def test_invoke_script_generates_from_an_sdxl_checkpoint_with_an_sdxl_embedding(
    tiny_sdxl_model, tiny_sdxl_ckpt, tmp_path
):
    emb = tmp_path / "embeddings"
    emb.mkdir()
    save_file(cat_rows(tiny_sdxl_model), str(emb / "mything.safetensors"))
    commands = tmp_path / "commands.txt"
    commands.write_text('"a photo of a mything, (red:1.2)" [blurry] -S 5 -s 2 -A k_euler\n', encoding="utf-8")
    args = ["--config", str(TINY_SDXL_CONFIG), "--weights", str(tiny_sdxl_ckpt), "--outdir", str(tmp_path / "out")]
    args += ["--from_file", str(commands), "--device", "cpu", "--precision", "full", "--history_file", "h"]
    args += ["--embedding_directory", str(emb)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "invoke.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    images = sorted((tmp_path / "out").glob("*.png"))
    assert len(images) == 1 and Image.open(images[0]).size == (64, 64), done.stderr[-2000:]
    assert json.loads(Image.open(images[0]).text["sd-metadata"])["image"]["embeddings"] == ["mything"]


def test_compare_embeddings_grid_on_sdxl(tiny_sdxl_model, tiny_sdxl_ckpt, tmp_path):
    files = []
    for name, rows in (
        ("cat", cat_rows(tiny_sdxl_model)),
        ("moved", {k: v + 0.3 for k, v in cat_rows(tiny_sdxl_model).items()}),
    ):
        files.append(tmp_path / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in rows.items()}, str(files[-1]))
    image, layout, metadata = compare_embeddings(
        TINY_SDXL_FINETUNE,
        tiny_sdxl_ckpt,
        files,
        ["a photo of *"],
        steps=1,
        sampler_name="k_euler",
        device="cpu",
        precision="full",
    )
    assert metadata["size"] == "128x128" and (layout.rows, layout.cols) == (1, 2)  # the config's size
    grid = np.asarray(image.convert("RGB")).astype(np.int16)
    cells = [grid[b[1] : b[3], b[0] : b[2]] for b in (layout.cell_box(0, c) for c in range(2))]
    assert np.abs(cells[0] - cells[1]).mean() > 1, "the two embeddings gave the same image"


def test_sample_grids_of_training_on_sdxl(tiny_sdxl_ckpt, monkeypatch):
    model = load_model_from_config(TINY_SDXL_FINETUNE, tiny_sdxl_ckpt)
    calls = []
    real = model.apply_model
    monkeypatch.setattr(model, "apply_model", lambda x, t, c: calls.append(c) or real(x, t, c))
    batch = {"caption": ["a photo of *"], "image": torch.rand(1, 3, 64, 96) * 2 - 1}
    out = log_images(model, batch, n=1, ddim_steps=1, unconditional_guidance_scale=3.0)
    assert out["samples"].shape == out["samples_scaled"].shape == (1, 3, 64, 96)
    guided = calls[-1]  # [uncond, cond]: the empty caption is zeros, the sizes are the batch's
    assert guided["crossattn"][0].eq(0).all() and guided["vector"][0, :P].eq(0).all()
    with torch.no_grad():
        expected = model.prompt_conditioner(["a photo of *"], target_size=(64, 96))
    torch.testing.assert_close(guided["vector"][1], expected["vector"][0], rtol=0, atol=0)


def test_txt2img_script_on_sdxl_matches_generate(gen, tiny_sdxl_model, tiny_sdxl_ckpt, tmp_path):
    emb = tmp_path / "mything.safetensors"
    save_file(cat_rows(tiny_sdxl_model), str(emb))
    args = ["--config", TINY_SDXL_CONFIG, "--ckpt", tiny_sdxl_ckpt, "--outdir", tmp_path / "out", "--skip_grid"]
    args += ["--prompt", "a photo of a mything", "--embedding_path", emb, "--sampler", "k_euler"]
    args += ["--ddim_steps", 2, "--seed", 7, "--device", "cpu", "--precision", "full"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "txt2img.py"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (sample,) = sorted((tmp_path / "out" / "samples").glob("*.png"))
    written = np.asarray(Image.open(sample).convert("RGB")).astype(np.int16)
    expected = run(gen, "a photo of a cat", steps=2, seed=7, width=None, height=None).astype(np.int16)
    assert written.shape == (64, 64, 3) and np.abs(written - expected).max() <= 1
