"""diffusers reads the SDXL embeddings we write, with the same rows: our clip_l/clip_g file (split into the two
`load_textual_inversion` calls diffusers documents for SDXL: text_encoder/tokenizer with clip_l,
text_encoder_2/tokenizer_2 with clip_g, `token=` given) and our learned_embeds + learned_embeds_2 pair (the
files diffusers' textual_inversion_sdxl.py writes, each loaded by path). The prompt diffusers then encodes
(prompt_embeds and pooled) is what our conditioner gives for the same file, so the halves landed in the right
encoders.

The pipeline is built offline from a tiny SDXL conditioner of ours (CLIP-L 32 + bigG 64, real vocabulary)
converted by diffusers' own converters (tests/sdxl_text_helpers.py); eos_token_id 49407 so transformers
pools at the EOS, not at the appended placeholder ids (see test_oracle_sdxl_text.py).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from sd_helpers import randomize_
from sdxl_text_helpers import big_g_twin, clip_l_twin, emb_models
from torch import nn

from ldm.embeddings import DIFFUSERS, LoadedEmbedding, read_embedding_file, write_embedding_file
from ldm.embeddings.library import EmbeddingLibrary
from ldm.modules.encoders.general_conditioner import GeneralConditioner
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER
from ldm.prompts import Conditioner

L, G = 32, 64
TOKEN = "<xlthing>"
PROMPT = "a photo of a <xlthing> on the beach"
TOL = 1e-5


@pytest.fixture(scope="module")
def general() -> GeneralConditioner:
    torch.manual_seed(0)
    return randomize_(GeneralConditioner(emb_models()), seed=4).eval()


@pytest.fixture(scope="module")
def twins(general) -> tuple[nn.Module, nn.Module]:
    holder = nn.Module()
    holder.conditioner = general  # the checkpoint's key layout: conditioner.embedders.{0,1}.*
    sd = holder.state_dict()
    clip_l, big_g = general.text_encoders
    return clip_l_twin(clip_l, sd, eos_token_id=49407), big_g_twin(big_g, sd, eos_token_id=49407)


def sdxl_pipeline(twins):
    """A fresh pipeline (load_textual_inversion grows its tokenizers and encoders)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    folder = str(SHIPPED_TOKENIZER)
    text_encoder, text_encoder_2 = (copy.deepcopy(t) for t in twins)
    return StableDiffusionXLPipeline(
        vae=None,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(folder, local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder, local_files_only=True, pad_token="!"),
        unet=None,
        scheduler=EulerDiscreteScheduler(),
    )


def learned_vectors(general: GeneralConditioner, n: int) -> torch.Tensor:
    """n vectors scaled like each encoder's own token embeddings, as the manager initialises them."""
    g = torch.Generator().manual_seed(n)
    scale = torch.cat([e.token_embedding.weight.std().expand(e.width) for e in general.text_encoders])
    return torch.randn(n, L + G, generator=g) * scale


def load_into_diffusers(pipe, path, layout: str) -> None:
    kwargs = [dict(text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)]
    kwargs.append(dict(text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2))
    if layout == "clip":  # diffusers' documented way for A1111/civitai SDXL files: split the dict
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        for key, kw in zip(("clip_l", "clip_g"), kwargs):
            pipe.load_textual_inversion(state[key], token=TOKEN, **kw)
    else:  # the pair: each file by path, the token is its key
        for name, kw in zip(("learned_embeds", "learned_embeds_2"), kwargs):
            pipe.load_textual_inversion(str(path.with_name(name + path.suffix)), **kw)


CASES = [  # (OUT, format, how diffusers loads it, vectors)
    ("xlthing.safetensors", None, "clip", 3),
    ("xlthing.pt", None, "clip", 1),
    ("pair/learned_embeds.safetensors", DIFFUSERS, "pair", 3),
    ("pair/learned_embeds.bin", DIFFUSERS, "pair", 1),
]


@pytest.mark.parametrize("out,fmt,layout,n", CASES)
def test_diffusers_loads_our_sdxl_files_with_the_same_rows_and_encodes_as_we_do(
    general, twins, tmp_path, out, fmt, layout, n
):
    vectors = learned_vectors(general, n)
    term = LoadedEmbedding(TOKEN, vectors, token=TOKEN, part_widths=(L, G))
    path = write_embedding_file(tmp_path / out, term, format=fmt)
    pipe = sdxl_pipeline(twins)
    load_into_diffusers(pipe, path, layout)

    tokens = [TOKEN] + [f"{TOKEN}_{i}" for i in range(1, n)]
    for tokenizer, encoder, cols in (
        (pipe.tokenizer, pipe.text_encoder, slice(0, L)),
        (pipe.tokenizer_2, pipe.text_encoder_2, slice(L, None)),
    ):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        assert min(ids) >= 49408  # appended to the vocabulary
        rows = encoder.get_input_embeddings().weight[ids].detach()
        assert torch.equal(rows, vectors[:, cols])

    # The same file in our library encodes the prompt as diffusers does with its two halves. A pickle keeps
    # no token, so there the term answers to its file name (as in A1111).
    library = EmbeddingLibrary(L + G, [path], part_widths=(L, G))
    (word,) = library.names()
    assert word == (TOKEN if path.suffix == ".safetensors" or layout == "pair" else "xlthing")
    conditioner = Conditioner(SimpleNamespace(text_encoders=general.text_encoders, conditioner=general), library)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
        ours = conditioner([PROMPT.replace(TOKEN, word)], target_size=(64, 64))
        plain = conditioner(["a photo of a on the beach"], target_size=(64, 64))
    assert ours["crossattn"].shape == embeds.shape == (1, 77, L + G)
    scale = embeds.abs().max()
    assert (ours["crossattn"] - embeds).abs().max() <= TOL * scale
    assert (ours["vector"][:, :G] - pooled).abs().max() <= TOL * pooled.abs().max()  # the vector starts pooled
    assert (plain["crossattn"] - embeds).abs().max() > 100 * TOL * scale  # the rows matter: this could fail


def test_a_diffusers_pair_from_the_sdxl_example_reads_here_as_written(general, twins, tmp_path):
    """The other direction on diffusers' own objects: the rows diffusers' pipeline holds after loading, saved
    the way textual_inversion_sdxl.py saves them (save_file({token: rows}, metadata format=pt) per encoder),
    read here as one term equal to them."""
    from safetensors.torch import save_file

    pipe = sdxl_pipeline(twins)
    vectors = learned_vectors(general, 2)
    term = LoadedEmbedding("s", vectors, part_widths=(L, G))
    load_into_diffusers(pipe, write_embedding_file(tmp_path / "src.safetensors", term), "clip")
    ids = pipe.tokenizer.convert_tokens_to_ids([TOKEN, f"{TOKEN}_1"])
    rows_l = pipe.text_encoder.get_input_embeddings().weight[min(ids) : max(ids) + 1].detach().cpu()
    ids_2 = pipe.tokenizer_2.convert_tokens_to_ids([TOKEN, f"{TOKEN}_1"])
    rows_g = pipe.text_encoder_2.get_input_embeddings().weight[min(ids_2) : max(ids_2) + 1].detach().cpu()
    out = tmp_path / "diffusers-run"
    out.mkdir()
    save_file({TOKEN: rows_l}, str(out / "learned_embeds.safetensors"), metadata={"format": "pt"})
    save_file({TOKEN: rows_g}, str(out / "learned_embeds_2.safetensors"), metadata={"format": "pt"})
    (term,) = read_embedding_file(out)
    assert term.name == TOKEN and term.part_widths == (L, G)
    assert torch.equal(term.vectors, torch.cat([rows_l, rows_g], dim=1)) and torch.equal(term.vectors, vectors)
