"""Oracle for SDXL's two text encoders: ours against transformers, through diffusers' own converters.

Our GeneralConditioner with random non-degenerate weights sits where SDXL's file puts it
(`conditioner.embedders.{0,1}`); diffusers' `convert_ldm_clip_checkpoint` and
`convert_open_clip_checkpoint(text_model, sd, prefix="conditioner.embedders.1.model.")` turn its state dict
into a `CLIPTextModel` (all 12 layers) and a `CLIPTextModelWithProjection` (all 32 blocks, projection
transposed into a Linear), configs built here (no hub). diffusers' SDXL pipeline conditions on
`hidden_states[-2]` of both and pools `text_embeds` from the second: ours must agree to <= 1e-4 relative in
fp32, for prompts holding a placeholder whose id (49408) is APPENDED to both vocabularies. transformers pools
at argmax(ids) when the config says eos_token_id 2 (SDXL's configs do): that lands on the placeholder;
with eos_token_id 49407 it pools at the first EOS, as we always do.
"""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from sd_helpers import randomize_
from sdxl_text_helpers import big_g_twin, clip_l_twin, emb_models
from torch import nn

from ldm.modules.encoders.general_conditioner import GeneralConditioner
from ldm.modules.encoders.open_clip import eos_index

TOL = 1e-4
PLACEHOLDER_ID = 49408  # one past the real vocabulary, as an added token gets
PROMPTS = [
    "a photo of cat riding a horse",
    "cat, a painting in the style of cat, highly detailed!!!",
    "",
    "a very detailed matte painting of a castle on a hill above a river at dusk, cat, " * 5,  # truncated
]


def _with_placeholder(tokens: torch.Tensor, encoder) -> torch.Tensor:
    """The prompts' "cat" id replaced by the appended placeholder id."""
    (cat,) = encoder.tokenizer("cat", add_special_tokens=False)["input_ids"]
    return tokens.masked_fill(tokens == cat, PLACEHOLDER_ID)


def _rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _grow(twin: nn.Module, row: torch.Tensor) -> None:
    twin.resize_token_embeddings(PLACEHOLDER_ID + 1)
    with torch.no_grad():
        twin.get_input_embeddings().weight[PLACEHOLDER_ID] = row


def _check(conditioner: GeneralConditioner) -> None:
    holder = nn.Module()
    holder.conditioner = conditioner  # where LatentDiffusion keeps it: the checkpoint's key layout
    sd = holder.state_dict()
    clip_l, big_g = conditioner.text_encoders
    g = torch.Generator().manual_seed(7)
    rows = [torch.randn(enc.width, generator=g) * enc.token_embedding.weight.std() for enc in (clip_l, big_g)]
    twins = (clip_l_twin(clip_l, sd), big_g_twin(big_g, sd))
    for twin, row in zip(twins, rows):
        _grow(twin, row)
    with torch.no_grad():
        # CLIP-L: hidden_states[-2] (= output of block 11 of 12), no final norm.
        tokens = _with_placeholder(clip_l.tokenize(PROMPTS), clip_l)
        assert (tokens == PLACEHOLDER_ID).any(dim=1).tolist() == [True, True, False, True]
        embeds = F.embedding(tokens, torch.cat([clip_l.token_embedding.weight, rows[0][None]]))
        ours = clip_l.encode_embeddings(embeds)
        theirs = twins[0](input_ids=tokens, output_hidden_states=True).hidden_states[-2]
        assert _rel(ours, theirs) <= TOL

        # bigG: hidden_states[-2] (penultimate, no ln_final) and the pooled text_embeds.
        tokens = _with_placeholder(big_g.tokenize(PROMPTS), big_g)
        assert tokens[2, 2:].eq(0).all()  # the empty prompt: BOS, EOS, then 0-padding
        embeds = F.embedding(tokens, torch.cat([big_g.token_embedding.weight, rows[1][None]]))
        context, pooled = big_g.encode_embeddings_pooled(embeds, eos_index(tokens))
        out = twins[1](input_ids=tokens, output_hidden_states=True)
        assert _rel(context, out.hidden_states[-2]) <= TOL
        # SDXL's own config (eos_token_id 2): argmax pooling lands on the placeholder, not EOS.
        assert not torch.equal(tokens.argmax(-1), eos_index(tokens))
        assert _rel(pooled[2:3], out.text_embeds[2:3]) <= TOL  # no placeholder: same row
        assert _rel(pooled[:2], out.text_embeds[:2]) > 1e-2
        # The corrected config pools at the first EOS: identical to ours.
        fixed = big_g_twin(big_g, sd, eos_token_id=49407)
        _grow(fixed, rows[1])
        assert _rel(pooled, fixed(input_ids=tokens).text_embeds) <= TOL


def test_tiny_sdxl_text_encoders_match_transformers_via_diffusers_converters():
    torch.manual_seed(0)
    _check(randomize_(GeneralConditioner(emb_models()), seed=3).eval())


@pytest.mark.slow
def test_full_size_sdxl_text_encoders_match_transformers_via_diffusers_converters():
    """CLIP ViT-L (123M, layer_idx 11) and OpenCLIP ViT-bigG (695M, 32 blocks): ~7 GB with the twins."""
    with torch.device("meta"):
        conditioner = GeneralConditioner(emb_models(tiny=False))
    conditioner.to_empty(device="cpu")
    conditioner.reset_buffers()
    clip_l, big_g = conditioner.text_encoders
    assert (clip_l.width, big_g.width, big_g.model.layers, conditioner.vector_width) == (768, 1280, 32, 2816)
    _check(randomize_(conditioner, seed=5).eval())
    del conditioner
    gc.collect()
