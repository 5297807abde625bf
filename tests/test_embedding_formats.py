"""Embedding files: every format round-trips bit-exactly, real paper pickles read, our pickles need no
allow-list, diffusers' own loader reads what we write, and bad files fail with one line naming them."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from sd_helpers import text_state_dict
from torch import nn

from ldm.embeddings import (
    A1111_PNG,
    DIFFUSERS,
    EMB_PARAMS,
    PAPER,
    EmbeddingFileError,
    LoadedEmbedding,
    read_embedding_file,
    write_embedding_file,
)
from ldm.errors import ConfigError, LdmUserError, UnsafeCheckpointError


def awkward_vectors(n: int = 3, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """float32 values whose decimal form is long, plus -0.0, a subnormal and extremes."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, dim, generator=g) * torch.logspace(-6, 3, dim)
    v[0, :4] = torch.tensor([-0.0, 1e-45, 3.4028235e38, 1 / 3], dtype=torch.float32)
    return v


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


CASES = [  # (file name, format argument, format read back, name read back, token read back)
    ("cat.pt", None, PAPER, "cat", "*"),
    ("cat.safetensors", None, EMB_PARAMS, "cat", None),
    ("learned_embeds.bin", None, DIFFUSERS, "cat", "cat"),
    ("learned_embeds.safetensors", DIFFUSERS, DIFFUSERS, "cat", "cat"),
    ("cat.png", None, A1111_PNG, "cat", "*"),
]


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("filename,fmt,read_fmt,name,token", CASES)
def test_round_trip_is_bit_exact(tmp_path, filename, fmt, read_fmt, name, token, n):
    term = LoadedEmbedding("cat", awkward_vectors(n), token="*", step=120, checkpoint="v1-5.safetensors")
    path = write_embedding_file(tmp_path / filename, term, format=fmt)
    (back,) = read_embedding_file(path)
    assert torch.equal(bits(back.vectors), bits(term.vectors)) and back.vectors.dtype == torch.float32
    assert (back.format, back.name, back.token, back.source) == (read_fmt, name, token, path)
    if read_fmt in (PAPER, A1111_PNG, EMB_PARAMS):
        assert (back.step, back.checkpoint) == (120, "v1-5.safetensors")
    assert not list(tmp_path.glob(".*.tmp"))


def test_written_pickles_are_plain_tensors_for_weights_only_loaders(tmp_path):
    leaf = nn.Parameter(awkward_vectors(2))
    write_embedding_file(tmp_path / "e.pt", LoadedEmbedding("e", leaf.t().contiguous().t(), token="*"))
    data = torch.load(tmp_path / "e.pt", weights_only=True)  # no allow-list at all
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    vec = data["string_to_param"]["*"]
    assert type(vec) is torch.Tensor and type(data["string_to_param"]) is dict and not vec.requires_grad
    assert vec.is_contiguous() and vec.dtype == torch.float32 and data["string_to_token"] == {"*": 265}
    write_embedding_file(tmp_path / "d.bin", LoadedEmbedding("<d>", leaf))
    assert type(torch.load(tmp_path / "d.bin", weights_only=True)["<d>"]) is torch.Tensor


def test_paper_pickle_with_parameterdict_reads(tmp_path):
    """The paper code saves string_to_param as an nn.ParameterDict of fp16-able nn.Parameters."""
    vec = awkward_vectors(2)
    paper = {
        "string_to_token": {"*": torch.tensor(265)},
        "string_to_param": nn.ParameterDict({"*": nn.Parameter(vec.clone())}),
    }
    torch.save(paper, tmp_path / "embeddings_gs-6099.pt")
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses it: our allow-list entry is what reads it
        torch.load(tmp_path / "embeddings_gs-6099.pt", weights_only=True)
    (term,) = read_embedding_file(tmp_path / "embeddings_gs-6099.pt")
    assert torch.equal(term.vectors, vec) and type(term.vectors) is torch.Tensor and not term.vectors.requires_grad
    assert (term.name, term.token, term.format) == ("embeddings_gs-6099", "*", PAPER)


def test_formats_are_detected_by_content_not_suffix(tmp_path):
    vec = awkward_vectors(2)
    torch.save({"<thing>": vec}, tmp_path / "diffusers_dict.pt")
    half = vec.clamp(-6e4, 6e4).half()  # float32's max would be inf in fp16, and inf vectors are refused
    torch.save({"string_to_param": {"*": half}, "name": "old"}, tmp_path / "paper_dict.bin")
    write_embedding_file(tmp_path / "x.safetensors", LoadedEmbedding("x", vec))
    os.replace(tmp_path / "x.safetensors", tmp_path / "renamed.pt")
    d, p, s = (read_embedding_file(tmp_path / f)[0] for f in ("diffusers_dict.pt", "paper_dict.bin", "renamed.pt"))
    assert (d.format, d.name, d.token) == (DIFFUSERS, "<thing>", "<thing>") and torch.equal(d.vectors, vec)
    assert (p.format, p.name) == (PAPER, "old") and torch.equal(p.vectors, half.float())
    assert (s.format, s.name) == (EMB_PARAMS, "renamed") and torch.equal(s.vectors, vec)


def test_several_terms(tmp_path, caplog):
    terms = [
        LoadedEmbedding("a", awkward_vectors(1, seed=1), token="<a>"),
        LoadedEmbedding("b", awkward_vectors(3, seed=2), token="<b>"),
    ]
    with caplog.at_level(logging.WARNING):
        write_embedding_file(tmp_path / "two.pt", terms)
    assert "one term per .pt" in caplog.text
    back = read_embedding_file(tmp_path / "two.pt")
    assert [(t.name, t.token, t.num_vectors) for t in back] == [("<a>", "<a>", 1), ("<b>", "<b>", 3)]
    write_embedding_file(tmp_path / "two.safetensors", terms)  # several -> diffusers layout
    back = read_embedding_file(tmp_path / "two.safetensors")
    assert [t.format for t in back] == [DIFFUSERS] * 2 and all(
        torch.equal(x.vectors, y.vectors) for x, y in zip(back, terms)
    )
    with pytest.raises(ConfigError, match="emb_params holds one term"):
        write_embedding_file(tmp_path / "two_e.safetensors", terms, format=EMB_PARAMS)
    with pytest.raises(ConfigError, match="suffix"):
        write_embedding_file(tmp_path / "two.txt", terms)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "name": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError) as exc:
        read_embedding_file(tmp_path / "evil.pt")
    one_line(exc, tmp_path / "evil.pt")
    assert "system" in str(exc.value) and not marker.exists()


def _png_without_chunk(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (4, 4)).save(path)
    return path


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda p: p.write_bytes(b"this is not an embedding at all"), "not a readable embedding file"),
        (lambda p: p.write_bytes(b""), "not a readable embedding file"),
        (lambda p: torch.save({"step": 3, "name": "x"}, p), "no embedding vectors"),
        (lambda p: torch.save({"string_to_param": {}}, p), "holds no vectors"),
        (lambda p: torch.save({"<x>": torch.zeros(2, 3, 4)}, p), r"shape \(2, 3, 4\)"),
        (lambda p: torch.save({"<x>": torch.zeros(1, 32), "<y>": torch.zeros(1, 48)}, p), "different widths"),
        (lambda p: torch.save({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1024)}, p), "'clip_g' is 1024"),
        (lambda p: torch.save({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(1, 1280)}, p), "2 vector"),
        (lambda p: torch.save({"<x>": torch.zeros(2, 4, dtype=torch.long)}, p), "float vectors"),
        (lambda p: torch.save([1, 2], p), "not an embedding dict"),
    ],
)
def test_bad_files_fail_with_one_line_naming_them(tmp_path, make, pattern):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(EmbeddingFileError, match=pattern) as exc:
        read_embedding_file(path)
    one_line(exc, path)


def test_bad_png_and_missing_file(tmp_path):
    path = _png_without_chunk(tmp_path / "plain.png")
    with pytest.raises(EmbeddingFileError, match="sd-ti-embedding") as exc:
        read_embedding_file(path)
    one_line(exc, path)
    with pytest.raises(LdmUserError, match="not found"):
        read_embedding_file(tmp_path / "missing.pt")


def test_png_text_chunk_is_a1111_layout(tmp_path):
    """Decode the chunk by hand, as A1111 does: base64 -> JSON with TORCHTENSOR nested lists."""
    import base64
    import json

    from PIL import Image

    vec = awkward_vectors(2)
    preview = Image.new("RGB", (64, 48), (10, 200, 30))
    path = write_embedding_file(tmp_path / "card.png", LoadedEmbedding("card", vec, step=7), preview=preview)
    with Image.open(path) as img:
        assert img.size == (64, 48)
        data = json.loads(base64.b64decode(img.text["sd-ti-embedding"]))
    assert data["name"] == "card" and data["step"] == 7 and data["string_to_token"] == {"*": 265}
    assert torch.equal(
        bits(torch.tensor(data["string_to_param"]["*"]["TORCHTENSOR"], dtype=torch.float64).float()), bits(vec)
    )


# -- diffusers' own loader on files we wrote -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipeline(tiny_model):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

    encoder = tiny_model.cond_stage_model
    text = CLIPTextModel(encoder.text_model.config)
    text.load_state_dict(text_state_dict(tiny_model.state_dict()))  # strict: every key matches
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=32,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(32,),
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=8,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER)),
        unet=unet,
        scheduler=DDIMScheduler(clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.parametrize("filename", ["reddisc.pt", "learned_embeds.bin", "learned_embeds.safetensors"])
def test_diffusers_load_textual_inversion_reads_our_files(tiny_pipeline, tiny_model, tmp_path, filename):
    from types import SimpleNamespace

    from ldm.modules.embedding_manager import EmbeddingManager
    from ldm.prompts import Conditioner

    pipe = copy.deepcopy(tiny_pipeline)
    token = f"<reddisc-{Path(filename).suffix[1:]}>"
    vec = torch.randn(3, 32) * 0.02
    path = write_embedding_file(
        tmp_path / filename,
        LoadedEmbedding(token, vec, token="*"),
        format=DIFFUSERS if filename.endswith(".safetensors") else None,
    )
    pipe.load_textual_inversion(str(path))  # the "name" field / the dict key becomes the token
    ids = pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1", f"{token}_2"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vec)

    # The same prompt through diffusers and through our conditioner gives the same conditioning.
    prompt = pipe.maybe_convert_prompt(f"a photo of {token} on grass", pipe.tokenizer)
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = pipe.text_encoder(ids).last_hidden_state
        manager = EmbeddingManager(copy.deepcopy(tiny_model.cond_stage_model), ["*"], ["grass"])
        manager.load(path)
        holder = SimpleNamespace(cond_stage_model=manager.embedder, embedding_manager=manager)
        ours = Conditioner(holder, prompt_syntax=False)(["a photo of * on grass"])["crossattn"]
    assert (ours - theirs).abs().max().item() < 1e-5


def test_safetensors_header_sniffing_does_not_misfire(tmp_path):
    """A pickle whose first bytes happen to look like a length does not pass as safetensors."""
    path = tmp_path / "fake.pt"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{...")
    with pytest.raises(EmbeddingFileError):
        read_embedding_file(path)
    assert zipfile.is_zipfile(write_embedding_file(tmp_path / "z.pt", LoadedEmbedding("z", torch.ones(1, 4))))
