"""The invoke> REPL and Generate on the tiny model: metadata chunks, !fetch reproduces bit-exactly,
embeddings land where expected, img2img step counts, and bad input never ends the session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sd_helpers import ROOT, TINY_CONFIG

from ldm.embeddings import LoadedEmbedding, write_embedding_file


def _invoke(ckpt: Path, commands: list[str], tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    script = tmp / "commands.txt"
    script.write_text("\n".join(commands) + "\n", encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "invoke.py"),
            "--config",
            str(TINY_CONFIG),
            "--weights",
            str(ckpt),
            "--outdir",
            str(tmp / "out"),
            "--from_file",
            str(script),
            "--device",
            "cpu",
            "--precision",
            "full",
            "--steps",
            "4",
            "-W",
            "64",
            "-H",
            "64",
            "--history_file",
            str(tmp / "hist"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def emb_dir(tmp_path) -> Path:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("redthing", "bluething", "uglything"):
        write_embedding_file(folder / f"{name}.pt", LoadedEmbedding(name, torch.randn(2, 32, generator=g)))
    return folder


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_from_file_writes_images_with_three_chunks_and_fetch_reproduces(tiny_ckpt, tmp_path, emb_dir):
    first = '"a photo of redthing and bluething [uglything, blurry]" -S 42 -A k_euler_a -C 5'
    result = _invoke(
        tiny_ckpt,
        [first, f"!fetch {tmp_path / 'out' / '000000.42.png'}", "q"],
        tmp_path,
        "--embedding_directory",
        str(emb_dir),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    original, fetched = tmp_path / "out" / "000000.42.png", tmp_path / "out" / "000001.42.png"
    text = Image.open(original).text
    assert set(text) >= {"Dream", "sd-metadata", "parameters"}
    assert "-S 42" in text["Dream"] and "[uglything, blurry]" in text["Dream"]
    meta = json.loads(text["sd-metadata"])["image"]
    assert meta["seed"] == 42 and meta["sampler"] == "k_euler_a" and meta["negative_prompt"] == "uglything, blurry"
    assert sorted(meta["embeddings"]) == ["bluething", "redthing"]
    assert "Negative prompt: uglything, blurry" in text["parameters"] and "Sampler: Euler a" in text["parameters"]
    assert np.array_equal(_pixels(original), _pixels(fetched))


def test_bad_input_is_one_line_and_the_repl_goes_on(tiny_ckpt, tmp_path, emb_dir):
    (emb_dir / "wide.safetensors").write_bytes(b"")  # unreadable: skipped with a warning, the rest load
    write_embedding_file(emb_dir / "sd2word.pt", LoadedEmbedding("sd2word", torch.zeros(1, 1024)))
    commands = [
        '"a cat" -s --nonsense',
        '"a cat" -I missing.png',
        '"a cat" -I {img} -f 1.5',
        '"a cat" -A nope',
        "!load ../../etc/passwd",
        "!fetch nothing.png",
        '"a photo of redthing" -S 3',
        "q",
    ]
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    commands = [c.replace("{img}", str(init)) for c in commands]
    result = _invoke(tiny_ckpt, commands, tmp_path, "--embedding_directory", str(emb_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("** ")]
    assert len(errors) == 6, result.stdout
    assert "missing.png" in errors[1] and "--strength: 1.5" in errors[2] and "k_euler_a" in errors[3]
    assert "passwd" in errors[4] or ".." in errors[4]
    assert (tmp_path / "out" / "000000.3.png").is_file()  # the session went on
    assert "wide.safetensors" in result.stderr and "sd2word" in result.stderr  # skipped, named


def test_tokenization_log_shows_where_embeddings_land(tiny_ckpt, tmp_path, emb_dir):
    result = _invoke(tiny_ckpt, ['"a photo of redthing" -t -S 1'], tmp_path, "--embedding_directory", str(emb_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "redthing" in result.stdout and "chunk 0" in result.stdout


def test_embeddings_change_conditioning_at_their_positions(tiny_model, emb_dir):
    from ldm.generate import Generate

    gen = Generate(
        config=TINY_CONFIG,
        model=tiny_model,
        device="cpu",
        precision="full",
        embedding_directory=emb_dir,
    )
    base = gen.conditioning(["a photo of redthing and bluething"])["crossattn"]
    word_pos = 4  # BOS a photo of -> 'redthing' vectors start at position 4 (causal: earlier positions unaffected)
    term = gen.library.get("redthing")
    term.vectors += 1.0
    changed = gen.conditioning(["a photo of redthing and bluething"])["crossattn"]
    diff = (changed - base).abs().amax(dim=-1)[0]
    assert diff[:word_pos].max() == 0 and diff[word_pos] > 0


def test_img2img_runs_round_strength_times_steps(tiny_model, tmp_path):
    from ldm.generate import Generate

    gen = Generate(config=TINY_CONFIG, model=tiny_model, device="cpu", precision="full", sampler_name="k_euler")
    init = Image.new("RGB", (64, 64), (30, 160, 90))
    for strength, expected in ((0.5, 5), (0.75, 8), (1.0, 10), (0.26, 3)):
        calls = []
        gen.img2img(
            "a cat",
            init,
            strength=strength,
            steps=10,
            seed=1,
            width=64,
            height=64,
            step_callback=lambda info, calls=calls: calls.append(info["i"]),
        )
        assert len(calls) == expected, (strength, len(calls))
    # strength -> 0: no denoising step runs and the result is the init image through the VAE round trip
    calls = []
    ((image, _),) = gen.img2img(
        "a cat", init, strength=0.01, steps=10, seed=1, width=64, height=64, step_callback=lambda info: calls.append(1)
    )
    model = tiny_model
    with torch.no_grad():
        from ldm.image_utils import pil_to_tensor, tensor_to_pil

        g = torch.Generator().manual_seed(1)
        z = model.get_first_stage_encoding(model.encode_first_stage(pil_to_tensor(init)), g)
        roundtrip = tensor_to_pil(model.decode_first_stage(z))[0]
    assert calls == [] and np.array_equal(np.asarray(image), np.asarray(roundtrip))
    with pytest.raises(Exception, match="strength"):
        gen.img2img("a cat", init, strength=0.0, steps=10, seed=1, width=64, height=64)


def test_negative_prompt_embedding_changes_only_the_unconditional_half(tiny_model, emb_dir):
    from ldm.generate import Generate

    gen = Generate(
        config=TINY_CONFIG,
        model=tiny_model,
        device="cpu",
        precision="full",
        embedding_directory=emb_dir,
    )
    prompts = ["a photo of redthing", "uglything , blurry"]  # [cond, uncond] as prompt2image batches them
    base = gen.conditioning(prompts)["crossattn"]
    gen.library.get("uglything").vectors.mul_(-1.0)
    changed = gen.conditioning(prompts)["crossattn"]
    diff = (changed - base).abs().amax(dim=-1)
    assert diff[0].max() == 0  # the positive prompt does not use it
    assert diff[1, 0] == 0 and diff[1, 1] > 0  # BOS unchanged; the negative word's vectors start at position 1
    report = "\n".join(gen.conditioner.tokenization_report("uglything , blurry"))
    assert "uglything" in report
