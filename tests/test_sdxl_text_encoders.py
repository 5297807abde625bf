"""SDXL text side: CLIP-L `layer: hidden`, OpenCLIP bigG (`FrozenOpenCLIPEmbedder2`, no final norm, pooled at
EOS), the size embedders and GeneralConditioner (columns, embedding keys, vector), on tiny encoders with the
real 49408-token vocabulary. The oracles against transformers/diffusers are in test_oracle_sdxl_text.py."""

from __future__ import annotations

import pytest
import torch
from sd_helpers import randomize_
from sdxl_text_helpers import BIG_G_TINY, CLIP_L_TINY, OUTDIM, SIZE_KEYS, emb_models

from ldm.errors import ConfigError
from ldm.modules.encoders.general_conditioner import GeneralConditioner
from ldm.modules.encoders.modules import FrozenCLIPEmbedder
from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder, FrozenOpenCLIPEmbedder2, eos_index
from ldm.modules.encoders.size_embedding import ConcatTimestepEmbedderND


@pytest.fixture(scope="module")
def conditioner() -> GeneralConditioner:
    torch.manual_seed(0)
    return randomize_(GeneralConditioner(emb_models()), seed=1).eval()


def _share_tokenizer(encoder, conditioner: GeneralConditioner, index: int):
    """Give a fresh encoder the fixture's loaded tokenizer (loading one costs about a second)."""
    encoder._tokenizer = conditioner.text_encoders[index].tokenizer
    return encoder


# -- CLIP-L -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_idx", [1, 3])  # 2 (the tiny SDXL one) in the conditioner and the oracle
def test_clip_hidden_layer_is_transformers_hidden_state_without_final_norm(layer_idx, conditioner):
    torch.manual_seed(0)
    enc = randomize_(FrozenCLIPEmbedder(layer="hidden", layer_idx=layer_idx, text_config=CLIP_L_TINY))
    _share_tokenizer(enc, conditioner, 0)
    tokens = enc.tokenize(["a photo of a cat", "a dog"])
    with torch.no_grad():
        ours = enc.encode_tokens(tokens)
        theirs = enc.text_model(input_ids=tokens, output_hidden_states=True).hidden_states[layer_idx]
        normed = enc.text_model.final_layer_norm(theirs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours - normed).abs().max() > 1e-2  # the final norm would make a real difference


@pytest.mark.parametrize(
    "params",
    [dict(layer="hidden"), dict(layer="hidden", layer_idx=4), dict(layer="last", layer_idx=2)],
    ids=["no-idx", "too-deep", "idx-without-hidden"],
)
def test_clip_layer_idx_is_checked(params):
    with pytest.raises(ConfigError, match="layer_idx"):
        FrozenCLIPEmbedder(text_config=CLIP_L_TINY, **params)


def test_clip_pads_with_eos_and_owns_all_columns_alone(conditioner):
    enc = _share_tokenizer(FrozenCLIPEmbedder(text_config=CLIP_L_TINY), conditioner, 0)
    (row,) = enc.tokenize("a cat").tolist()
    assert row[:2] == [49406, 320] and row[3:] == [49407] * 74
    assert enc.columns == slice(0, 32) and enc.embedding_key is None and not enc.returns_pooled


# -- OpenCLIP bigG ------------------------------------------------------------------------------------
def _big_g(**params) -> FrozenOpenCLIPEmbedder2:
    torch.manual_seed(0)
    enc = FrozenOpenCLIPEmbedder2(arch="ViT-bigG-14", text_config=BIG_G_TINY, **params)
    return randomize_(enc, seed=2).eval()


def _raw_blocks(enc, embeds: torch.Tensor, n: int) -> torch.Tensor:
    """The tower by hand: positions, then the first n blocks, nothing else."""
    x = embeds + enc.model.positional_embedding
    for block in enc.model.transformer.resblocks[:n]:
        x = block(x)
    return x


def test_big_g_context_is_penultimate_without_ln_final_and_legacy_is_sd2(conditioner):
    sdxl = _share_tokenizer(_big_g(layer="penultimate", legacy=False, always_return_pooled=True), conditioner, 1)
    tokens = sdxl.tokenize(["a photo of a cat", ""])
    embeds = sdxl.token_embedding(tokens)
    with torch.no_grad():
        raw = _raw_blocks(sdxl, embeds, 2)
        torch.testing.assert_close(sdxl.encode_embeddings(embeds), raw, rtol=0, atol=0)
        sd2 = FrozenOpenCLIPEmbedder(arch="ViT-bigG-14", text_config=BIG_G_TINY, layer="penultimate")
        sd2.load_state_dict(sdxl.state_dict())
        legacy = FrozenOpenCLIPEmbedder2(arch="ViT-bigG-14", text_config=BIG_G_TINY, layer="penultimate")
        legacy.load_state_dict(sdxl.state_dict())
        torch.testing.assert_close(legacy.encode_embeddings(embeds), sd2.encode_embeddings(embeds), rtol=0, atol=0)
        torch.testing.assert_close(sd2.encode_embeddings(embeds), sdxl.model.ln_final(raw), rtol=0, atol=0)


def test_big_g_pools_ln_final_of_last_block_at_eos_times_projection(conditioner):
    enc = _share_tokenizer(_big_g(layer="penultimate", legacy=False, always_return_pooled=True), conditioner, 1)
    assert enc.returns_pooled and enc.tokenize("a cat")[0, 4:].eq(0).all()  # bigG pads with 0
    tokens = enc.tokenize(["a photo of a cat", "a dog"])
    embeds = enc.token_embedding(tokens)
    with torch.no_grad():
        context, pooled = enc.encode_embeddings_pooled(embeds, eos_index(tokens))
        torch.testing.assert_close(context, enc.encode_embeddings(embeds), rtol=0, atol=0)
        last = enc.model.ln_final(_raw_blocks(enc, embeds, 3))
        eos = [6, 3]  # BOS + 5 / 2 tokens
        want = torch.stack([last[0, eos[0]], last[1, eos[1]]]) @ enc.model.text_projection
        wrong_side = torch.stack([last[0, eos[0]], last[1, eos[1]]]) @ enc.model.text_projection.T
    torch.testing.assert_close(pooled, want, rtol=1e-6, atol=1e-6)
    assert (pooled - wrong_side).abs().max() > 1e-2  # x @ P, not an nn.Linear with weight P


def test_eos_index_ignores_appended_placeholder_ids():
    tokens = torch.tensor([[49406, 49408, 320, 49407, 0, 0], [49406, 320, 49409, 49407, 49407, 49407]])
    assert eos_index(tokens).tolist() == [3, 3]
    assert tokens.argmax(-1).tolist() == [1, 2]  # what argmax pooling would pick
    with pytest.raises(ValueError, match="no EOS"):
        eos_index(torch.tensor([[49406, 320, 0]]))


def test_pooled_needs_non_legacy():
    with pytest.raises(ConfigError, match="legacy"):
        FrozenOpenCLIPEmbedder2(arch="ViT-bigG-14", text_config=BIG_G_TINY, always_return_pooled=True)


# -- size embedders -----------------------------------------------------------------------------------
def test_size_embedder_matches_diffusers_timesteps():
    from diffusers.models.embeddings import Timesteps

    sizes = torch.tensor([[1024, 768], [0, 64], [832, 1216]])
    ours = ConcatTimestepEmbedderND(256)(sizes)
    theirs = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(sizes.flatten()).reshape(3, 512)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert list(ConcatTimestepEmbedderND(256).parameters()) == []


# -- GeneralConditioner -------------------------------------------------------------------------------
def test_conditioner_layout_columns_and_keys(conditioner):
    clip_l, big_g = conditioner.text_encoders
    assert isinstance(clip_l, FrozenCLIPEmbedder) and isinstance(big_g, FrozenOpenCLIPEmbedder2)
    assert (clip_l.columns, big_g.columns) == (slice(0, 32), slice(32, 96))
    assert (clip_l.embedding_key, big_g.embedding_key) == ("clip_l", "clip_g")
    assert (clip_l.tokenizer.pad_token_id, big_g.tokenizer.pad_token_id) == (49407, 0)
    assert conditioner.width == 96 and conditioner.pooled_encoder is big_g
    assert conditioner.vector_width == 64 + 3 * 2 * OUTDIM
    keys = set(conditioner.state_dict())
    assert "embedders.0.transformer.text_model.encoder.layers.2.mlp.fc1.weight" in keys
    assert "embedders.1.model.text_projection" in keys and "embedders.1.model.logit_scale" in keys
    assert not any(k.startswith(("embedders.2", "embedders.3", "embedders.4")) for k in keys)
    assert not any(p.requires_grad for p in conditioner.parameters())


def test_conditioner_vector_is_pooled_then_sizes_in_embedder_order(conditioner):
    pooled = torch.randn(2, 64)
    original, crop, target = torch.tensor([[1024, 768], [512, 512]]), torch.tensor([[0, 32], [16, 0]]), (1024, 1024)
    y = conditioner.vector(pooled, original, crop, target)
    emb = ConcatTimestepEmbedderND(OUTDIM)
    want = torch.cat([pooled, emb(original), emb(crop), emb(torch.tensor([target, target]))], dim=1)
    torch.testing.assert_close(y, want, rtol=0, atol=0)


def test_conditioner_forward_concatenates_contexts(conditioner):
    batch = {"txt": ["a photo of a cat", ""], **{k: torch.tensor([[64, 64], [64, 96]]) for k in SIZE_KEYS}}
    with torch.no_grad():
        out = conditioner(batch)
        clip_l, big_g = conditioner.text_encoders
        first = clip_l.encode_tokens(clip_l.tokenize(batch["txt"]))
        second, pooled = big_g.encode_tokens_pooled(big_g.tokenize(batch["txt"]))
    assert out["crossattn"].shape == (2, 77, 96) and out["vector"].shape == (2, conditioner.vector_width)
    torch.testing.assert_close(out["crossattn"], torch.cat([first, second], -1), rtol=0, atol=0)
    torch.testing.assert_close(out["vector"][:, :64], pooled, rtol=0, atol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m[2].update(input_key="aesthetic_score"), "input_key"),
        (lambda m: m[0].update(input_key="original_size_as_tuple"), "text encoders take"),
        (lambda m: m[1].update(colour="red"), "unknown keys"),
        (lambda m: m.__setitem__(1, dict(m[0])), "two clip_l"),
        (lambda m: m[1]["params"].update(legacy=True), "legacy"),
    ],
    ids=["size-key", "text-as-size", "entry-key", "two-clip-l", "pooled-legacy"],
)
def test_conditioner_config_errors(change, message):
    models = emb_models()
    change(models)
    with pytest.raises(ConfigError, match=message):
        GeneralConditioner(models)


def test_meta_build_then_reset_buffers(conditioner):
    with torch.device("meta"):
        built = GeneralConditioner(emb_models())
    for index, encoder in enumerate(built.text_encoders):
        _share_tokenizer(encoder, conditioner, index)
    built.to_empty(device="cpu")
    built.reset_buffers()
    built.load_state_dict(conditioner.state_dict())
    batch = {"txt": ["a cat"], **{k: torch.tensor([[64, 64]]) for k in SIZE_KEYS}}
    with torch.no_grad():
        torch.testing.assert_close(built(batch)["crossattn"], conditioner(batch)["crossattn"], rtol=0, atol=0)


# -- tokenizers: what diffusers' SDXL tokenizer (EOS padding) and tokenizer_2 (pad "!") give ---------------
TOKENIZER_PROMPTS = ["a photo of a cat", "", "a very detailed matte painting of a castle at dusk, " * 8]


def test_tokenizers_pad_as_diffusers_sdxl_tokenizers(conditioner):
    from transformers import CLIPTokenizer

    from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

    clip_l, big_g = conditioner.text_encoders
    tokenizer = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), local_files_only=True)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), local_files_only=True, pad_token="!")
    assert (tokenizer.pad_token_id, tokenizer_2.pad_token_id) == (49407, 0)
    for ours, theirs in ((clip_l, tokenizer), (big_g, tokenizer_2)):
        want = theirs(TOKENIZER_PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        torch.testing.assert_close(ours.tokenize(TOKENIZER_PROMPTS), want["input_ids"], rtol=0, atol=0)
    first, second = clip_l.tokenize(["a cat"])[0], big_g.tokenize(["a cat"])[0]
    assert first[4:].eq(49407).all() and second[4:].eq(0).all() and torch.equal(first[:4], second[:4])
    # The "!" BPE token stays text on bigG (pad by id, not by the "!" string; diffusers #4153).
    (bang,) = tokenizer("!!", add_special_tokens=False)["input_ids"]
    assert big_g.tokenize("wow!!")[0, 2].item() == bang


def test_full_size_conditioner_has_the_sd_xl_base_layout():
    """sdxl-base-inference.yaml's conditioner, built on meta: the key layout and shapes of sd_xl_base_1.0."""
    with torch.device("meta"):
        full = GeneralConditioner(emb_models(tiny=False))
    clip_l, big_g = full.text_encoders
    assert (clip_l.columns, big_g.columns, full.width, full.vector_width) == (
        slice(0, 768),
        slice(768, 2048),
        2048,
        2816,
    )
    assert (clip_l.n_blocks, big_g.n_blocks, clip_l.max_length) == (11, 31, 77)
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert shapes["embedders.0.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert shapes["embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight"] == (768, 3072)
    assert shapes["embedders.1.model.token_embedding.weight"] == (49408, 1280)
    assert shapes["embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert shapes["embedders.1.model.text_projection"] == (1280, 1280) and shapes["embedders.1.model.logit_scale"] == ()
    assert not any(".layers.12." in k or ".resblocks.32." in k for k in shapes)
