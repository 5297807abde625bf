"""FrozenOpenCLIPEmbedder (SD 2.x text encoder): checkpoint layout, tokenizer, and an oracle.

Oracle: our encoder with random non-degenerate weights, its state dict under `cond_stage_model.model.`
converted by diffusers' own `convert_open_clip_checkpoint` and loaded strictly into transformers'
`CLIPTextModel` (gelu, eps 1e-5, one layer fewer for `penultimate`), gives our hidden states to <= 1e-4
in fp32 for real prompts tokenised the OpenCLIP way (0-padding). The converter drops SD 2's last block
and `text_projection` by a fixed key list (`...resblocks.23.*`), and maps `ln_final` to
`final_layer_norm`, which CLIPTextModel applies to its last layer: ln_final(output of block 22).
"""

from __future__ import annotations

import gc
import shutil

import pytest
import torch
from sd_helpers import open_clip_twin, randomize_
from torch import nn

from ldm.errors import ConfigError
from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder
from ldm.modules.encoders.open_clip_tokenizer import BOS_ID, EOS_ID, PAD_ID
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER, load_tokenizer

TOL = 1e-4
PREFIX = "cond_stage_model.model."
PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "a painting of a fox sitting in a field at sunrise, by Claude Monet, highly detailed!!!",
    "",
    # longer than 75 tokens: truncated, EOS kept in the last position
    "a very detailed matte painting of a castle on a hill above a river at dusk, " * 5,
]
TINY = dict(width=32, layers=3, heads=4)


def _holder(embedder: nn.Module) -> nn.Module:
    """Puts the encoder where LatentDiffusion does, at `cond_stage_model`."""
    holder = nn.Module()
    holder.cond_stage_model = embedder
    return holder


def _design_keys(width: int = 1024, layers: int = 24, vocab: int = 49408, context: int = 77) -> dict:
    """The SD 2.x text-encoder keys and shapes as DESIGN.md lists them (OpenCLIP's layout)."""
    w = width
    keys = {"token_embedding.weight": (vocab, w), "positional_embedding": (context, w)}
    for i in range(layers):
        block = {
            "ln_1.weight": (w,),
            "ln_1.bias": (w,),
            "attn.in_proj_weight": (3 * w, w),
            "attn.in_proj_bias": (3 * w,),
            "attn.out_proj.weight": (w, w),
            "attn.out_proj.bias": (w,),
            "ln_2.weight": (w,),
            "ln_2.bias": (w,),
            "mlp.c_fc.weight": (4 * w, w),
            "mlp.c_fc.bias": (4 * w,),
            "mlp.c_proj.weight": (w, 4 * w),
            "mlp.c_proj.bias": (w,),
        }
        keys.update({f"transformer.resblocks.{i}.{k}": s for k, s in block.items()})
    keys.update({"ln_final.weight": (w,), "ln_final.bias": (w,), "text_projection": (w, w), "logit_scale": ()})
    return {PREFIX + k: v for k, v in keys.items()}


def _random_encoder(layer: str = "penultimate", text_config: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return randomize_(FrozenOpenCLIPEmbedder(layer=layer, text_config=text_config), seed=seed).eval()


# -- layout ------------------------------------------------------------------------------------------------
def test_full_size_keys_and_shapes_are_the_sd2_checkpoint_layout():
    with torch.device("meta"):  # 354M parameters: no memory, no init cost
        model = _holder(FrozenOpenCLIPEmbedder(arch="ViT-H-14", layer="penultimate"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _design_keys()
    assert len(ours) == 294
    assert sum(v.numel() for v in model.parameters()) == pytest.approx(354.0e6, rel=1e-3)


def test_tiny_state_dict_round_trips_through_safetensors_strictly(tmp_path):
    from safetensors.torch import load_file, save_file

    original = _holder(_random_encoder(text_config=TINY, seed=3))
    path = tmp_path / "text.safetensors"
    save_file(original.state_dict(), str(path))
    loaded = load_file(str(path))
    assert set(loaded) == set(_design_keys(width=32, layers=3))
    with torch.device("meta"):
        copy = _holder(FrozenOpenCLIPEmbedder(layer="penultimate", text_config=TINY))
    result = copy.load_state_dict(loaded, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    copy.cond_stage_model.reset_buffers()
    assert not any(t.is_meta for t in list(copy.parameters()) + list(copy.buffers()))
    tokens = original.cond_stage_model.tokenize(PROMPTS[:2])
    with torch.no_grad():
        assert torch.equal(copy.cond_stage_model.encode_tokens(tokens), original.cond_stage_model.encode_tokens(tokens))


def test_loads_strictly_through_the_project_loader_at_cond_stage_model(tmp_path):
    """The tiny SD config with this encoder as cond_stage_config: saved, then read back by
    load_model_from_config (meta build, every key accounted for), gives the same conditioning."""
    from omegaconf import OmegaConf
    from sd_helpers import TINY_CONFIG, load_config

    from ldm.model_loading import build_model, load_model_from_config

    cfg = load_config(TINY_CONFIG)
    cfg.model.params.cond_stage_config = OmegaConf.create(
        {
            "target": "ldm.modules.encoders.open_clip.FrozenOpenCLIPEmbedder",
            "params": {"arch": "ViT-H-14", "layer": "penultimate", "freeze": True, "text_config": TINY},
        }
    )
    torch.manual_seed(0)
    model = randomize_(build_model(cfg.model), seed=5).eval()
    sd = model.state_dict()
    assert {k for k in sd if k.startswith("cond_stage_model.")} == set(_design_keys(width=32, layers=3))
    torch.save({"state_dict": sd}, tmp_path / "tiny-sd2.ckpt")
    loaded = load_model_from_config(cfg, tmp_path / "tiny-sd2.ckpt")
    assert isinstance(loaded.cond_stage_model, FrozenOpenCLIPEmbedder)
    with torch.no_grad():
        assert torch.equal(loaded.cond_stage_model.encode(PROMPTS[:2]), model.cond_stage_model.encode(PROMPTS[:2]))


# -- tokenizer -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny_encoder():
    return _random_encoder(text_config=TINY, seed=1)


def test_tokenizer_pads_with_zero_and_places_eos(tiny_encoder, clip_tokenizer):
    rows = tiny_encoder.tokenize(PROMPTS)
    assert rows.shape == (len(PROMPTS), 77) and rows.dtype == torch.long
    for prompt, row in zip(PROMPTS, rows.tolist()):
        content = clip_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(content) <= 75:
            assert row == [BOS_ID, *content, EOS_ID] + [PAD_ID] * (75 - len(content))
        else:  # cut to 75 content tokens; EOS last, no padding
            assert row == [BOS_ID, *content[:75], EOS_ID]
    assert rows[2, :3].tolist() == [BOS_ID, EOS_ID, PAD_ID]  # the empty prompt


def test_exclamation_mark_stays_an_ordinary_token(tiny_encoder, clip_tokenizer, tmp_path):
    # SD 2.x diffusers folders name "!" (id 0) as the pad token; loaded naively, every "!" becomes 0.
    folder = tmp_path / "tokenizer"
    shutil.copytree(SHIPPED_TOKENIZER, folder)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        text = (folder / name).read_text()
        (folder / name).write_text(text.replace('"pad_token": "<|endoftext|>"', '"pad_token": "!"'))
    prompt = "wow!! a cat! hello!!!"
    from transformers import CLIPTokenizer

    naive = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    content = clip_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert naive(prompt, add_special_tokens=False)["input_ids"] != content  # the trap is real
    for encoder in (tiny_encoder, FrozenOpenCLIPEmbedder(tokenizer_path=str(folder), text_config=TINY)):
        row = encoder.tokenize(prompt)[0].tolist()
        assert row[: len(content) + 2] == [BOS_ID, *content, EOS_ID]
        assert PAD_ID not in row[: len(content) + 2]


def test_tokenizer_passes_through_but_pads_by_id(tiny_encoder, clip_tokenizer):
    tok = tiny_encoder.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.pad_token) == (BOS_ID, EOS_ID, 0, "!")
    assert len(tok) == len(clip_tokenizer)
    texts = ["a cat", "a photo of a dog"]
    plain = clip_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert tok(texts, add_special_tokens=False)["input_ids"] == plain
    padded = tok(texts, padding="max_length", max_length=10, return_attention_mask=False)
    assert "attention_mask" not in padded
    assert padded["input_ids"][0] == [BOS_ID, *plain[0], EOS_ID] + [PAD_ID] * (8 - len(plain[0]))
    single = tok("a cat", padding="max_length", max_length=6)["input_ids"]
    assert single == [BOS_ID, *plain[0], EOS_ID, PAD_ID, PAD_ID]


# -- interface ---------------------------------------------------------------------------------------------
def test_interface_matches_frozen_clip_embedder(tiny_encoder):
    enc = tiny_encoder
    assert enc.text_model.embeddings.token_embedding is enc.model.token_embedding is enc.token_embedding
    assert enc.width == 32 and enc.max_length == 77
    assert not any(p.requires_grad for p in enc.parameters())
    with torch.no_grad():
        tokens = enc.tokenize(PROMPTS[:2])
        z = enc.encode_tokens(tokens)
        assert z.shape == (2, 77, 32)
        assert torch.equal(enc(PROMPTS[:2]), z)
        assert torch.equal(enc.encode(PROMPTS[:2]), z)
        assert torch.equal(enc.encode_embeddings(enc.token_embedding(tokens)), z)


def test_penultimate_skips_the_last_block(tiny_encoder):
    last = FrozenOpenCLIPEmbedder(layer="last", text_config=TINY)
    last.load_state_dict(tiny_encoder.state_dict(), strict=True)
    tokens = tiny_encoder.tokenize(PROMPTS[:1])
    with torch.no_grad():
        pen = tiny_encoder.encode_tokens(tokens)
        assert (last.encode_tokens(tokens) - pen).abs().max() > 1e-2
        # Changing the last block, the projection or the logit scale leaves SD 2's conditioning alone.
        m = tiny_encoder.model
        for p in [*m.transformer.resblocks[-1].parameters(), m.text_projection, m.logit_scale]:
            saved = p.clone()
            p.add_(1.0)
            assert torch.equal(tiny_encoder.encode_tokens(tokens), pen)
            p.copy_(saved)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(layer="middle"), "layer='middle'"),
        (dict(arch="ViT-X-99"), "arch='ViT-X-99'"),
        (dict(text_config=dict(hidden_size=32)), "unknown keys ['hidden_size']"),
        (dict(text_config=dict(width=30, layers=2, heads=4)), "not divisible by heads=4"),
        (dict(text_config=dict(width=32, layers=1, heads=4), layer="penultimate"), "layers >= 2"),
        (dict(text_config=dict(width=32, layers=2, heads=0)), "text_config.heads=0"),
        (dict(text_config=dict(width=32, layers=2, heads=4, context_length=16)), "max_length=77 exceeds"),
    ],
)
def test_bad_config_is_one_config_error(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        FrozenOpenCLIPEmbedder(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# -- oracle --------------------------------------------------------------------------------------------------
def _transformers_twin(encoder: FrozenOpenCLIPEmbedder) -> nn.Module:
    """transformers' CLIPTextModel loaded strictly from our state dict via diffusers' converter."""
    return open_clip_twin(encoder, _holder(encoder).state_dict(), prefix=PREFIX)


def _check_against_twin(encoder: FrozenOpenCLIPEmbedder) -> None:
    twin = _transformers_twin(encoder)
    tokens = encoder.tokenize(PROMPTS)
    assert (tokens == PAD_ID).any() and not (tokens[3] == PAD_ID).any()  # padded rows and a full one
    with torch.no_grad():
        ours = encoder.encode_tokens(tokens)
        theirs = twin(input_ids=tokens).last_hidden_state
    assert ours.abs().mean() > 0.1  # non-trivial output
    assert (ours - theirs).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "layer, text_config",
    [
        pytest.param("penultimate", dict(width=32, layers=24, heads=4), id="sd2-depth-penultimate"),
        pytest.param("penultimate", TINY, id="shallow-penultimate"),
        pytest.param("last", TINY, id="shallow-last"),
    ],
)
def test_tiny_encoder_matches_transformers_via_diffusers_converter(layer, text_config):
    _check_against_twin(_random_encoder(layer=layer, text_config=text_config, seed=2))


@pytest.mark.slow
def test_full_size_vit_h_matches_transformers_via_diffusers_converter():
    encoder = _random_encoder(layer="penultimate", seed=4)  # ViT-H/14: W=1024, 24 blocks, 354M
    assert encoder.n_blocks == 23
    _check_against_twin(encoder)
    del encoder
    gc.collect()
