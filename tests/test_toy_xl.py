"""The SDXL-shaped toy world: its config has SDXL's classes and key layout at a few MB, and the toy trainer
turns captions into SDXL conditioning (concatenated contexts, pooled vector, sizes) that trains both text
encoders, with dropped captions trained as SDXL samples an empty prompt."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from sd_helpers import ROOT
from train_helpers import tiny_env

from ldm.toy.base_model import build_random_model
from ldm.toy.text_conditioning import condition, text_module, tokenize

XL_CONFIG = ROOT / "configs" / "toy-world" / "xl-inference.yaml"
SD1_CONFIG = ROOT / "configs" / "toy-world" / "inference.yaml"
CAPTIONS = ["a photo of a red star on a blue background", "a small green circle"]


@pytest.fixture(scope="module")
def xl():
    torch.manual_seed(0)
    return build_random_model(XL_CONFIG)


def test_xl_toy_has_sdxl_classes_and_key_layout(xl):
    from ldm.modules.encoders.general_conditioner import GeneralConditioner

    assert isinstance(xl.conditioner, GeneralConditioner) and xl.family == "sdxl"
    keys = set(xl.state_dict())
    for key in (
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.label_emb.0.2.weight",
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
        "conditioner.embedders.1.model.token_embedding.weight",
        "conditioner.embedders.1.model.text_projection",
        "first_stage_model.decoder.conv_out.weight",
    ):
        assert key in keys, key
    encoders = xl.conditioner.text_encoders
    assert [e.embedding_key for e in encoders] == ["clip_l", "clip_g"]
    assert all(e.token_embedding.num_embeddings == 49408 for e in encoders)  # the real vocabulary
    assert xl.conditioner.vector_width == xl.model.diffusion_model.label_emb[0][0].in_features
    size = sum(v.numel() * 2 for v in xl.state_dict().values() if v.is_floating_point())
    assert size <= 30e6  # fp16 on disk: within the 30 MB


def test_xl_conditioning_concatenates_contexts_and_fills_the_vector(xl):
    tokens = tokenize(xl, CAPTIONS)
    assert tokens[0][0, -1] == 49407 and tokens[1][0, -1] == 0  # CLIP-L pads with EOS, bigG with 0
    empty = [t[0] for t in tokenize(xl, "")]
    with torch.no_grad():
        cond = condition(xl, tokens, empty, torch.tensor([False, False]), (32, 32))
        plain = xl.conditioner(
            {
                "txt": CAPTIONS,
                "original_size_as_tuple": torch.tensor([[32, 32]] * 2),
                "crop_coords_top_left": torch.zeros(2, 2),
                "target_size_as_tuple": torch.tensor([[32, 32]] * 2),
            }
        )
    assert cond["crossattn"].shape == (2, 77, 96) and cond["vector"].shape == (2, 160)
    torch.testing.assert_close(cond["crossattn"], plain["crossattn"])
    torch.testing.assert_close(cond["vector"], plain["vector"])


def test_a_dropped_caption_is_zero_context_and_pooled_with_sizes_kept(xl):
    tokens = tokenize(xl, CAPTIONS)
    empty = [t[0] for t in tokenize(xl, "")]
    with torch.no_grad():
        cond = condition(xl, tokens, empty, torch.tensor([False, True]), (32, 32))
    pooled = xl.conditioner.pooled_encoder.model.text_projection.shape[1]
    assert torch.count_nonzero(cond["crossattn"][1]) == 0 and torch.count_nonzero(cond["vector"][1, :pooled]) == 0
    assert torch.count_nonzero(cond["crossattn"][0]) > 0 and torch.count_nonzero(cond["vector"][0, :pooled]) > 0
    torch.testing.assert_close(cond["vector"][1, pooled:], cond["vector"][0, pooled:])  # the size part stays


def test_training_reaches_both_text_encoders_and_the_label_embedding(xl):
    model = copy.deepcopy(xl)
    trainable = [*model.model.parameters(), *text_module(model).parameters()]
    with torch.no_grad():  # as after a first step: the UNet's zero-initialised output projections have moved
        for p in trainable:
            if not p.any():
                p.normal_(0.0, 0.01)
            p.requires_grad_(True)
    tokens = tokenize(model, CAPTIONS)
    cond = condition(model, tokens, [t[0] for t in tokenize(model, "")], torch.tensor([False, False]), (32, 32))
    model.apply_model(torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), cond).pow(2).mean().backward()
    for encoder in model.conditioner.text_encoders:
        assert encoder.token_embedding.weight.grad.abs().sum() > 0
    assert model.model.diffusion_model.label_emb[0][0].weight.grad.abs().sum() > 0


def test_sd1_conditioning_is_the_empty_caption_encoding():
    torch.manual_seed(0)
    sd1 = build_random_model(SD1_CONFIG)
    tokens = tokenize(sd1, CAPTIONS)
    empty = [t[0] for t in tokenize(sd1, "")]
    with torch.no_grad():
        cond = condition(sd1, tokens, empty, torch.tensor([False, True]), (32, 32))
        want = sd1.cond_stage_model.encode_tokens(torch.stack([tokens[0][0], empty[0]]))
    torch.testing.assert_close(cond, want)


def test_train_toy_world_xl_missing_reused_part_is_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_toy_world.py"),
            "--xl",
            "--out",
            str(tmp_path / "o"),
            "--vae_from",
            str(tmp_path / "missing.safetensors"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=tiny_env(),
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --vae_from") and "missing.safetensors does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
