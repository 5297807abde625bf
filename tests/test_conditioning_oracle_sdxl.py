"""Conditioning oracle: our SDXL context and vector against diffusers' StableDiffusionXLPipeline.

A tiny SDXL conditioner (sd_xl_base's classes and keys, CLIP-L 32 + bigG 64 wide, size embeddings of 8 per
number) with random weights; diffusers' own converters turn the same weights into its two text encoders
(tests/sdxl_text_helpers.py), and a pipeline is built offline from them, two CLIP tokenizers (the second
pads with "!" = id 0, as SDXL's tokenizer_2) and a tiny UNet2DConditionModel whose `add_time_proj` makes the
time embeddings. One embedding term (2 vectors) is loaded in both: ours as one 96-wide term, diffusers' by
its two `load_textual_inversion` calls (clip_l part into text_encoder, clip_g part into text_encoder_2).

Compared, fp32, <= 1e-5 relative: prompt_embeds with our "crossattn", and cat(pooled_prompt_embeds,
add_time_proj(_get_add_time_ids(...))) (what diffusers' UNet feeds its label embedding) with our "vector";
the same for a negative prompt, and for an EMPTY negative (diffusers: negative_prompt None with
force_zeros_for_empty_prompt, zeros) against our "". transformers pools at the first EOS only when the
text config's eos_token_id is 49407; SDXL's shipped config says 2, which pools at argmax(ids), i.e. on an
appended placeholder (tests/test_oracle_sdxl_text.py shows it), so the twins here are built with 49407.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sd_helpers import randomize_
from sdxl_text_helpers import OUTDIM, big_g_twin, clip_l_twin, emb_models
from torch import nn

from ldm.embeddings import LoadedEmbedding
from ldm.embeddings.library import EmbeddingLibrary
from ldm.modules.encoders.general_conditioner import GeneralConditioner
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER
from ldm.prompts import Conditioner

TOL = 1e-5
L, G = 32, 64
TOKEN = "<mything>"
PROMPTS = ["a photo of a <mything> on the beach", "an oil painting of a red cat, highly detailed"]
NEGATIVE = "blurry, low quality"
SIZES = dict(original_size=(128, 160), crops_coords_top_left=(8, 16), target_size=(64, 96))


@pytest.fixture(scope="module")
def ours():
    torch.manual_seed(0)
    general = randomize_(GeneralConditioner(emb_models()), seed=0).eval()
    g = torch.Generator().manual_seed(1)
    scale = torch.cat([e.token_embedding.weight.std().expand(e.width) for e in general.text_encoders])
    vectors = torch.randn(2, L + G, generator=g) * scale
    library = EmbeddingLibrary(L + G)
    library.add(LoadedEmbedding(TOKEN, vectors, token=TOKEN))
    model = SimpleNamespace(text_encoders=general.text_encoders, conditioner=general)
    return Conditioner(model, library), general, vectors


@pytest.fixture(scope="module")
def pipe(ours):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    _, general, vectors = ours
    holder = nn.Module()
    holder.conditioner = general  # the checkpoint's key layout: conditioner.embedders.{0,1}.*
    sd = holder.state_dict()
    clip_l, big_g = general.text_encoders
    folder = str(SHIPPED_TOKENIZER)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=L + G,
        attention_head_dim=4,
        addition_embed_type="text_time",
        addition_time_embed_dim=OUTDIM,
        projection_class_embeddings_input_dim=G + 3 * 2 * OUTDIM,
    )
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=clip_l_twin(clip_l, sd, eos_token_id=49407),
        text_encoder_2=big_g_twin(big_g, sd, eos_token_id=49407),
        tokenizer=CLIPTokenizer.from_pretrained(folder, local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder, local_files_only=True, pad_token="!"),
        unet=unet,
        scheduler=EulerDiscreteScheduler(),
        force_zeros_for_empty_prompt=True,
    )
    assert pipe.tokenizer_2.pad_token_id == 0 and pipe.tokenizer.pad_token_id == 49407
    with torch.no_grad():
        pipe.load_textual_inversion(
            vectors[:, :L].clone(), token=TOKEN, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        pipe.load_textual_inversion(
            vectors[:, L:].clone(), token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
    return pipe


def _vector(pipe, pooled: torch.Tensor) -> torch.Tensor:
    """What diffusers' UNet feeds its add_embedding: cat(text_embeds, add_time_proj(time_ids))."""
    time_ids = pipe._get_add_time_ids(
        **SIZES, dtype=torch.float32, text_encoder_projection_dim=int(pooled.shape[-1])
    ).expand(pooled.shape[0], -1)
    time_embeds = pipe.unet.add_time_proj(time_ids.flatten()).reshape(pooled.shape[0], -1)
    return torch.cat([pooled, time_embeds], dim=-1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _ours(conditioner: Conditioner, prompts: list[str]) -> dict[str, torch.Tensor]:
    return conditioner(
        prompts,
        original_size=SIZES["original_size"],
        crop_top_left=SIZES["crops_coords_top_left"],
        target_size=SIZES["target_size"],
    )


@torch.no_grad()
def test_context_and_vector_equal_diffusers_encode_prompt_with_an_embedding(ours, pipe):
    conditioner, _, _ = ours
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPTS, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
    )
    mine = _ours(conditioner, PROMPTS)
    assert mine["crossattn"].shape == embeds.shape == (2, 77, L + G)
    assert _rel(mine["crossattn"], embeds) <= TOL
    assert _rel(mine["vector"], _vector(pipe, pooled)) <= TOL
    # the term matters: without it the prompt is farther from diffusers' than the tolerance
    assert _rel(_ours(conditioner, ["a photo of a on the beach"])["crossattn"][0], embeds[0]) > 100 * TOL

    mine_negative = _ours(conditioner, [NEGATIVE, NEGATIVE])
    assert _rel(mine_negative["crossattn"], negative) <= TOL
    assert _rel(mine_negative["vector"], _vector(pipe, negative_pooled)) <= TOL


@torch.no_grad()
def test_an_empty_negative_is_zeros_as_diffusers_force_zeros_for_empty_prompt(ours, pipe):
    conditioner, _, _ = ours
    _, negative, _, negative_pooled = pipe.encode_prompt(
        PROMPTS[:1], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None
    )
    assert negative.eq(0).all() and negative_pooled.eq(0).all()
    mine = _ours(conditioner, [""])
    assert torch.equal(mine["crossattn"], negative)
    assert _rel(mine["vector"], _vector(pipe, negative_pooled)) <= TOL
