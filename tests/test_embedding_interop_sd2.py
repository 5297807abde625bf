"""diffusers' own `StableDiffusionPipeline.load_textual_inversion` on a tiny SD 2.x-shaped pipeline reads
1024-wide embeddings our writer made, in every format it reads, with the same rows; and the prompt it then
encodes is what our SD 2.x text encoder gives with those rows spliced in.

The pipeline is built offline from diffusers/transformers classes: a CLIPTextModel of the real SD 2.x width
(1024, gelu, 2 layers) converted from our FrozenOpenCLIPEmbedder by diffusers' `convert_open_clip_checkpoint`,
the shipped CLIP tokenizer with SD 2.x's pad token ("!", id 0), a UNet with cross_attention_dim 1024 and
linear projections, and a v-prediction scheduler as the 768-v model has.
"""

from __future__ import annotations

import copy

import pytest
import torch
from sd_helpers import randomize_
from torch import nn

from ldm.embeddings import DIFFUSERS, EMB_PARAMS, PAPER, LoadedEmbedding, read_embedding_file, write_embedding_file
from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder

WIDTH = 1024
PREFIX = "cond_stage_model.model."
TEXT = dict(width=WIDTH, layers=3, heads=16)  # penultimate: 2 blocks condition, as the twin's 2 layers


@pytest.fixture(scope="module")
def encoder() -> FrozenOpenCLIPEmbedder:
    torch.manual_seed(0)
    return randomize_(FrozenOpenCLIPEmbedder(layer="penultimate", text_config=TEXT), seed=3).eval()


@pytest.fixture(scope="module")
def text_encoder_state(encoder) -> tuple:
    """transformers' CLIPTextModel config and state dict for our encoder, by diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    m = encoder.model
    config = CLIPTextConfig(
        vocab_size=m.vocab_size,
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=encoder.n_blocks,
        num_attention_heads=m.heads,
        max_position_embeddings=m.context_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    holder = nn.Module()
    holder.cond_stage_model = encoder
    last = f"{PREFIX}transformer.resblocks.{m.layers - 1}."  # the converter drops SD 2's block 23 by name
    state = {k: v for k, v in holder.state_dict().items() if not k.startswith(last)}
    with torch.device("meta"):
        skeleton = CLIPTextModel(config)
    converted = convert_open_clip_checkpoint(skeleton, state, prefix=PREFIX)
    if not hasattr(skeleton, "text_model"):  # transformers >= 5.6 has no text_model level
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    return config, converted


def sd2_pipeline(config, converted):
    """A fresh tiny SD 2.x-shaped pipeline (each test adds tokens to its own tokenizer and encoder)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

    text = CLIPTextModel(copy.deepcopy(config))  # load_textual_inversion grows the config's vocab_size
    result = text.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=WIDTH,
        attention_head_dim=2,
        use_linear_projection=True,
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
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), pad_token="!"),  # SD 2.x folders' pad
        unet=unet,
        scheduler=DDIMScheduler.from_config(scheduler.config, prediction_type="v_prediction"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


CASES = [  # (file name, format, token diffusers needs passed: emb_params files carry none, vectors)
    ("reddisc.pt", PAPER, None, 1),
    ("reddisc.pt", PAPER, None, 3),
    ("learned_embeds.bin", DIFFUSERS, None, 3),
    ("learned_embeds.safetensors", DIFFUSERS, None, 1),
    ("reddisc.safetensors", EMB_PARAMS, "<reddisc>", 3),
]


@pytest.mark.parametrize("filename,fmt,token_arg,n", CASES)
def test_diffusers_reads_our_1024_wide_files_with_the_same_rows(
    encoder, text_encoder_state, tmp_path, filename, fmt, token_arg, n
):
    pipe = sd2_pipeline(*text_encoder_state)
    token = "<reddisc>"
    vec = torch.randn(n, WIDTH, generator=torch.Generator().manual_seed(n)) * 0.02
    path = write_embedding_file(tmp_path / filename, LoadedEmbedding(token, vec, token="*"), format=fmt)
    (ours,) = read_embedding_file(path)
    assert ours.format == fmt and ours.dim == WIDTH

    pipe.load_textual_inversion(str(path), token=token_arg)  # the "name" field / the dict key is the token
    tokens = [token] + [f"{token}_{i}" for i in range(1, n)]
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
    assert min(ids) >= 49408  # new tokens, appended to the vocabulary
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    assert rows.shape == (n, WIDTH) and torch.equal(rows, vec)

    # The prompt diffusers encodes with those rows is what our SD 2.x encoder gives with them spliced in.
    prompt = f"a photo of {token} on grass"
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompt, torch.device("cpu"), 1, False)  # expands the multi-vector word
        expanded = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
        ids = pipe.tokenizer(expanded, padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert int((ids >= 49408).sum()) == n
        assert (ids == 0).any()  # padded with "!" (id 0), the OpenCLIP way
        placeholders = ids >= encoder.token_embedding.num_embeddings
        embeds = encoder.token_embedding(ids.masked_fill(placeholders, 0))
        embeds[placeholders] = vec
        ours_context = encoder.encode_embeddings(embeds)
        plain = encoder.encode(["a photo of on grass"])
    assert theirs.shape == (1, 77, WIDTH)
    assert (ours_context - theirs).abs().max().item() < 1e-4
    assert (plain - theirs).abs().max().item() > 1e-2  # the rows matter: the comparison could fail


def test_the_pipeline_runs_a_v_prediction_step_with_the_word(text_encoder_state, tmp_path):
    pipe = sd2_pipeline(*text_encoder_state)
    vec = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(5)) * 0.02
    path = write_embedding_file(tmp_path / "learned_embeds.bin", LoadedEmbedding("<sd2>", vec, token="*"))
    pipe.load_textual_inversion(str(path))
    with torch.no_grad():
        out = pipe(
            "a photo of <sd2>",
            height=8,
            width=8,
            num_inference_steps=2,
            guidance_scale=1.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
