"""The prompt Conditioner on the tiny SDXL (CLIP-L 32 + bigG 64 wide, vector 64 + 3 * 2 * 8 = 112).

What is checked: the context is CLIP-L's and bigG's outputs side by side, each padded its own way (the
plain sgm path of GeneralConditioner.forward is the reference); a term's 96-wide vectors reach each
encoder through its own columns; pooling stays on the EOS of the first chunk when a term or a second
chunk is present; an empty prompt gives zero context and zero pooled; the size inputs reach the vector
and are never served stale from the cache; emphasis is applied per encoder.
"""

from __future__ import annotations

import pytest
import torch

from ldm.embeddings import LoadedEmbedding
from ldm.embeddings.library import EmbeddingLibrary
from ldm.errors import ConfigError
from ldm.prompts import Conditioner

L, G, P = 32, 64, 64  # CLIP-L width, bigG width, pooled width of the tiny SDXL
SIZE_PART = slice(P, P + 3 * 2 * 8)


@pytest.fixture(scope="module")
def model(tiny_sdxl_model):
    for encoder in tiny_sdxl_model.text_encoders:
        _ = encoder.tokenizer  # load the vocabularies once
    return tiny_sdxl_model


def token_rows(model, word: str) -> torch.Tensor:
    """The 96-wide vectors that stand for `word` exactly: each encoder's token-embedding rows, side by side."""
    ids = model.text_encoders[0].tokenizer(word, add_special_tokens=False)["input_ids"]
    return torch.cat([e.token_embedding.weight[ids] for e in model.text_encoders], dim=1).detach().clone()


def library(**terms: torch.Tensor) -> EmbeddingLibrary:
    lib = EmbeddingLibrary(L + G)
    for name, vectors in terms.items():
        lib.add(LoadedEmbedding(name, vectors, token=name))
    return lib


@torch.no_grad()
def test_context_and_vector_match_the_plain_sgm_path(model):
    prompts = ["a photo of a cat", "red dog on grass"]
    size = dict(original_size=(96, 80), crop_top_left=(8, 0), target_size=(64, 72))
    ours = Conditioner(model)(prompts, **size)
    plain = model.conditioner({"txt": prompts, **{k: torch.tensor([v] * 2) for k, v in _sgm_sizes(size).items()}})
    assert ours["crossattn"].shape == (2, 77, L + G) and ours["vector"].shape == (2, 112)
    torch.testing.assert_close(ours["crossattn"], plain["crossattn"], rtol=0, atol=0)
    torch.testing.assert_close(ours["vector"], plain["vector"], rtol=0, atol=0)


def _sgm_sizes(size: dict) -> dict:
    names = {"original_size": "original_size_as_tuple", "crop_top_left": "crop_coords_top_left"}
    return {names.get(k, "target_size_as_tuple"): v for k, v in size.items()}


@torch.no_grad()
def test_a_term_reaches_each_encoder_through_its_columns_and_pooling_stays_on_eos(model):
    """A term whose vectors are the rows of "cat" gives what "cat" gives, context and pooled; changing the
    bigG columns moves only the bigG part and the pooled vector."""
    rows = token_rows(model, "cat")
    cond = Conditioner(model, library(mything=rows))
    word, term = cond(["a photo of a cat"]), cond(["a photo of a mything"])
    torch.testing.assert_close(term["crossattn"], word["crossattn"], rtol=0, atol=0)
    torch.testing.assert_close(term["vector"], word["vector"], rtol=0, atol=0)

    moved = rows.clone()
    moved[:, L:] += torch.randn(moved[:, L:].shape, generator=torch.Generator().manual_seed(0))  # not a constant:
    # LayerNorm would hide a constant shift from the attention that carries it to the EOS
    other = Conditioner(model, library(mything=moved))(["a photo of a mything"])
    assert torch.equal(other["crossattn"][..., :L], word["crossattn"][..., :L])  # CLIP-L untouched
    assert (other["crossattn"][..., L:] - word["crossattn"][..., L:]).abs().max() > 1e-3
    assert (other["vector"][:, :P] - word["vector"][:, :P]).abs().max() > 1e-3
    assert torch.equal(other["vector"][:, SIZE_PART], word["vector"][:, SIZE_PART])


@torch.no_grad()
def test_an_empty_prompt_gives_zero_context_and_pooled_but_its_size_part(model):
    out = Conditioner(model)(["a cat", ""], target_size=(64, 64))
    assert out["crossattn"][1].eq(0).all() and out["vector"][1, :P].eq(0).all()
    assert out["crossattn"][0].abs().max() > 0 and out["vector"][0, :P].abs().max() > 0
    assert torch.equal(out["vector"][1, SIZE_PART], out["vector"][0, SIZE_PART])
    assert out["vector"][1, SIZE_PART].abs().max() > 0


@torch.no_grad()
def test_long_prompts_are_chunked_for_both_encoders_and_pooled_from_the_first_chunk(model):
    first, second = " ".join(["red"] * 75), "blue cat"
    cond = Conditioner(model, comma_backtrack=0)
    long_ = cond([f"{first} {second}"])
    head, tail = cond([first]), cond([second])
    assert long_["crossattn"].shape == (1, 154, L + G)
    torch.testing.assert_close(long_["crossattn"][:, :77], head["crossattn"], rtol=0, atol=0)
    torch.testing.assert_close(long_["crossattn"][:, 77:], tail["crossattn"], rtol=0, atol=0)
    torch.testing.assert_close(long_["vector"], head["vector"], rtol=0, atol=0)
    assert (long_["vector"][:, :P] - tail["vector"][:, :P]).abs().max() > 1e-3


@torch.no_grad()
def test_size_inputs_reach_the_vector_and_the_cache_never_serves_a_stale_one(model):
    cond = Conditioner(model)
    general = model.conditioner
    base = cond(["a cat"], target_size=(64, 64))
    pooled = base["vector"][:, :P]
    for kwargs in (
        dict(target_size=(128, 64)),
        dict(target_size=(64, 64), original_size=(300, 200)),
        dict(target_size=(64, 64), crop_top_left=(16, 4)),
    ):
        out = cond(["a cat"], **kwargs)
        sizes = (kwargs.get("original_size", kwargs["target_size"]), kwargs.get("crop_top_left", (0, 0)))
        expected = general.vector(pooled, *sizes, kwargs["target_size"])
        torch.testing.assert_close(out["vector"], expected, rtol=0, atol=0)
        assert not torch.equal(out["vector"], base["vector"])
        assert torch.equal(out["crossattn"], base["crossattn"])
    default = cond(["a cat"])  # no size: SDXL's 1024 x 1024, uncropped
    torch.testing.assert_close(default["vector"], general.vector(pooled, (1024, 1024), (0, 0), (1024, 1024)))
    per_prompt = cond(["a cat", "a cat"], target_size=torch.tensor([[64, 64], [128, 64]]))
    assert torch.equal(per_prompt["vector"][0], base["vector"][0])
    assert torch.equal(per_prompt["vector"][1], cond(["a cat"], target_size=(128, 64))["vector"][0])


@pytest.mark.parametrize("bad", [(64,), (64, -8), (float("nan"), 64), "big", [[64, 64]] * 3])
def test_a_bad_size_input_is_one_config_error_naming_it(model, bad):
    with pytest.raises(ConfigError, match="original_size"):
        Conditioner(model)(["a cat", "a dog"], original_size=bad)


@torch.no_grad()
def test_emphasis_weights_each_encoder_and_keeps_each_ones_mean(model):
    cond = Conditioner(model)
    plain, weighted = cond(["a cat on grass"])["crossattn"][0], cond(["a (cat:1.6) on grass"])["crossattn"][0]
    for part in (slice(0, L), slice(L, L + G)):
        a, b = plain[:, part], weighted[:, part]
        assert (a - b).abs().max() > 1e-3
        torch.testing.assert_close(b.mean(), a.mean(), rtol=1e-5, atol=1e-6)


def test_learned_vectors_get_gradients_in_both_column_ranges(model):
    vectors = token_rows(model, "cat").requires_grad_(True)
    out = Conditioner(model, library(mything=vectors))(["a photo of a mything"], target_size=(64, 64))
    (out["crossattn"].square().sum() + out["vector"].square().sum()).backward()
    assert vectors.grad[:, :L].abs().max() > 0 and vectors.grad[:, L:].abs().max() > 0
