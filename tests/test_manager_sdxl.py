"""EmbeddingManager on the tiny SDXL model (CLIP-L 32 + bigG 64, real vocabulary): one parameter [n, 96] per
placeholder, initialised from the init word's rows in EACH encoder, random init scaled per encoder, gradients
reaching both encoders' columns through the conditioner, clip_l/clip_g files in and out, width refusals
naming SDXL, and the training snapshots' names (`embeddings_gs-N.safetensors`, `embeddings.safetensors`)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldm.callbacks.embedding_snapshot import EmbeddingSnapshot, embedding_file_name
from ldm.embeddings import SDXL, EmbeddingFileError, LoadedEmbedding, read_embedding_file
from ldm.modules.embedding_manager import EmbeddingManager
from ldm.prompts import Conditioner

L, G = 32, 64  # the tiny SDXL encoders' widths


@pytest.fixture(scope="module")
def conditioner_module(tiny_sdxl_model):
    """A private copy of the tiny model's GeneralConditioner (tests below may scale its weights)."""
    module = copy.deepcopy(tiny_sdxl_model.conditioner)
    for encoder in module.text_encoders:
        _ = encoder.tokenizer  # load each vocabulary once
    return module


def manager(embedder, **params) -> EmbeddingManager:
    return EmbeddingManager(embedder, **{"placeholder_strings": ["*"], **params})


def ids_of(encoder, text: str) -> list[int]:
    return encoder.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_one_parameter_per_placeholder_from_the_init_word_in_each_encoder(conditioner_module):
    m = manager(conditioner_module, initializer_words=["sculpture"], num_vectors_per_token=2)
    clip_l, big_g = conditioner_module.text_encoders
    assert m.dim == L + G and m.part_widths == (L, G) and m.file_suffix == ".safetensors"
    (param,) = m.embedding_parameters()
    assert param.shape == (2, L + G) and param.dtype == torch.float32
    for encoder, cols in ((clip_l, slice(0, L)), (big_g, slice(L, None))):
        ids = ids_of(encoder, "sculpture")
        rows = [ids[i * len(ids) // 2] for i in range(2)]
        assert torch.equal(param[:, cols].detach(), encoder.token_embedding.weight[rows].detach().float())
    assert not torch.equal(clip_l.token_embedding.weight[:1, :L], big_g.token_embedding.weight[:1, :L])
    assert set(m.state_dict()) == {"learned.0", "initial_0"}  # the SD 1.x resume keys


def test_random_init_is_scaled_per_encoder(conditioner_module):
    scaled = copy.deepcopy(conditioner_module)
    with torch.no_grad():
        scaled.text_encoders[1].token_embedding.weight.mul_(10.0)
    torch.manual_seed(0)
    (param,) = manager(scaled, num_vectors_per_token=8).embedding_parameters()
    std_l, std_g = (scaled.text_encoders[i].token_embedding.weight.float().std().item() for i in (0, 1))
    got_l, got_g = param[:, :L].std().item(), param[:, L:].std().item()
    assert 0.7 < got_l / std_l < 1.3 and 0.7 < got_g / std_g < 1.3, (got_l, std_l, got_g, std_g)
    assert got_g / got_l > 5  # each half follows its own encoder's scale


def test_gradients_reach_both_encoders_columns_through_the_conditioner(tiny_sdxl_model, conditioner_module):
    m = manager(conditioner_module, initializer_words=["cat"], num_vectors_per_token=2)
    model = SimpleNamespace(
        text_encoders=conditioner_module.text_encoders, conditioner=conditioner_module, embedding_manager=m
    )
    cond = Conditioner(model, prompt_syntax=False)(["a photo of *", "a plain photo"])
    assert cond["crossattn"].shape[-1] == L + G and "vector" in cond
    (cond["crossattn"][0].pow(2).sum() + cond["vector"][0].pow(2).sum()).backward()
    (param,) = m.embedding_parameters()
    assert param.grad is not None
    assert param.grad[:, :L].abs().sum() > 0 and param.grad[:, L:].abs().sum() > 0


def test_save_and_load_clip_l_clip_g_files(conditioner_module, tmp_path):
    m = manager(conditioner_module, initializer_words=["cat"], num_vectors_per_token=3)
    with torch.no_grad():
        m.embedding_parameters()[0].add_(torch.randn(3, L + G) * 0.01)
    learned = m.embedding_parameters()[0].detach().clone()
    path = m.save(tmp_path / "embeddings.safetensors", step=12)
    stored = load_file(str(path))
    assert set(stored) == {"clip_l", "clip_g"}
    assert torch.equal(stored["clip_l"], learned[:, :L]) and torch.equal(stored["clip_g"], learned[:, L:])
    (term,) = read_embedding_file(path)
    assert term.format == SDXL and term.part_widths == (L, G) and term.step == 12

    fresh = manager(conditioner_module, initializer_words=["dog"], num_vectors_per_token=3)
    fresh.load(path)
    assert torch.equal(fresh.embedding_parameters()[0].detach(), learned)
    pt = m.save(tmp_path / "embeddings.pt")  # .pt: the same two tensors as a plain pickle
    assert set(torch.load(pt, weights_only=True)) == {"clip_l", "clip_g"}


@pytest.mark.parametrize(
    "halves,needles",
    [
        ({"emb_params": torch.randn(1, L)}, ["32 wide", "SDXL model", "clip_l 32 + clip_g 64"]),
        (
            {"clip_l": torch.randn(1, G), "clip_g": torch.randn(1, L)},
            ["clip_l 64 + clip_g 32", "clip_l 32 + clip_g 64"],
        ),
    ],
    ids=["one-encoder", "swapped"],
)
def test_load_refuses_terms_that_do_not_fit_naming_the_split(conditioner_module, tmp_path, halves, needles):
    path = tmp_path / "other.safetensors"
    save_file(halves, str(path))
    m = manager(conditioner_module, initializer_words=["cat"])
    with pytest.raises(EmbeddingFileError) as exc:
        m.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and all(n in msg for n in needles), msg


def test_load_takes_an_in_memory_sdxl_term(conditioner_module):
    m = manager(conditioner_module, initializer_words=["cat"])
    vectors = torch.randn(2, L + G)
    m.load(LoadedEmbedding("*", vectors, token="*", part_widths=(L, G)))
    assert torch.equal(m.embedding_parameters()[0].detach(), vectors)  # the file's vector count wins


def test_snapshots_are_safetensors_for_sdxl_and_pt_otherwise(conditioner_module, tiny_model, tmp_path):
    from ldm.evaluation.compare_embeddings import find_snapshots

    m = manager(conditioner_module, initializer_words=["cat"])
    assert embedding_file_name(m) == "embeddings.safetensors"
    assert embedding_file_name(m, 40) == "embeddings_gs-40.safetensors"
    sd1 = manager(tiny_model.cond_stage_model, initializer_words=["cat"])
    assert embedding_file_name(sd1) == "embeddings.pt" and embedding_file_name(sd1, 40) == "embeddings_gs-40.pt"

    callback = EmbeddingSnapshot(str(tmp_path / "checkpoints"), every_n_steps=10)
    trainer = SimpleNamespace(global_rank=0, global_step=10)
    callback.save(trainer, SimpleNamespace(embedding_manager=m), with_step=True)
    written = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert written == ["embeddings.safetensors", "embeddings_gs-10.safetensors"]
    (term,) = read_embedding_file(tmp_path / "checkpoints" / "embeddings.safetensors")
    assert term.step == 10 and term.token == "*" and term.part_widths == (L, G)
    assert find_snapshots(tmp_path) == [tmp_path / "checkpoints" / "embeddings_gs-10.safetensors"]


def test_a_library_for_the_model_checks_where_sdxl_terms_split(tiny_sdxl_model, tiny_model, tmp_path):
    from ldm.embeddings.library import EmbeddingLibrary

    library = EmbeddingLibrary.for_model(tiny_sdxl_model)
    assert library.dim == L + G and library.part_widths == (L, G)
    sd1 = EmbeddingLibrary.for_model(tiny_model)
    assert sd1.dim == tiny_model.cond_stage_model.width and sd1.part_widths is None
    path = tmp_path / "swapped.safetensors"
    save_file({"clip_l": torch.randn(1, G), "clip_g": torch.randn(1, L)}, str(path))
    with pytest.raises(EmbeddingFileError, match="clip_l 64 \\+ clip_g 32"):
        library.load(path)
    assert EmbeddingLibrary(2048).part_widths == (768, 1280)  # a 2048-wide model is real SDXL


def test_ctrl_c_saves_the_sdxl_embedding_under_its_snapshot_name(conditioner_module, tmp_path):
    from ldm.callbacks.resume_checkpoint import ResumeCheckpoint

    m = manager(conditioner_module, initializer_words=["cat"])
    saved = []
    trainer = SimpleNamespace(global_rank=0, global_step=7, save_checkpoint=saved.append)
    ResumeCheckpoint(str(tmp_path)).on_exception(trainer, SimpleNamespace(embedding_manager=m), KeyboardInterrupt())
    assert saved == [tmp_path / "last.ckpt"]
    (term,) = read_embedding_file(tmp_path / "embeddings.safetensors")
    assert term.step == 7 and torch.equal(term.vectors, m.embedding_parameters()[0].detach())


def test_generate_refuses_an_sd1_embedding_on_sdxl_naming_the_family(tiny_sdxl_model, tmp_path):
    from ldm.embeddings import write_embedding_file
    from ldm.generate import Generate

    sd1 = write_embedding_file(tmp_path / "mycat.pt", LoadedEmbedding("mycat", torch.randn(1, 768)))
    gen = Generate(model=tiny_sdxl_model, embedding_paths=[sd1], device="cpu")
    with pytest.raises(EmbeddingFileError) as exc:
        gen.conditioner  # noqa: B018 - building the library reads the file
    msg = str(exc.value)
    assert "\n" not in msg and str(sd1) in msg, msg
    assert "768 wide" in msg and "SD 1.x" in msg and "SDXL model" in msg and "clip_l 32 + clip_g 64" in msg, msg


@pytest.mark.slow  # a subprocess that loads the tiny SDXL model: ~20 s on 2 cores
def test_an_sd1_embedding_on_sdxl_is_one_error_line_from_txt2img(tiny_sdxl_ckpt, tmp_path):
    import subprocess
    import sys

    from ldm.embeddings import write_embedding_file

    root = Path(__file__).resolve().parents[1]
    sd1 = write_embedding_file(tmp_path / "mycat.pt", LoadedEmbedding("mycat", torch.randn(1, 768)))
    args = ["--config", "tests/fixtures/tiny-sdxl.yaml", "--ckpt", tiny_sdxl_ckpt, "--embedding_path", sd1]
    args += ["--prompt", "a photo of mycat", "--H", "64", "--W", "64", "--ddim_steps", "2", "--n_samples", "1"]
    args += ["--device", "cpu", "--precision", "full", "--outdir", tmp_path / "out"]
    result = subprocess.run(
        [sys.executable, "scripts/txt2img.py", *map(str, args)], cwd=root, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and str(sd1) in lines[0], lines
    assert "768 wide" in lines[0] and "SD 1.x" in lines[0] and "SDXL model" in lines[0], lines
    assert not list((tmp_path / "out").rglob("*.png"))
