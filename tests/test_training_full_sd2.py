"""Slow: main.py trains 1024-wide vectors on the full-size SD 2.x architecture (random weights, the v2 config),
eps and v, starting from the init word's row of the OpenCLIP token embedding: `pytest -m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sd_helpers import ROOT, load_config, randomize_
from train_helpers import make_concept, only_run_dir, run_main

pytestmark = pytest.mark.slow

V2_INFERENCE = ROOT / "configs" / "stable-diffusion" / "v2-inference.yaml"
TOKEN_EMBEDDING = "cond_stage_model.model.token_embedding.weight"


@pytest.fixture(scope="module")
def full_v2_ckpt(tmp_path_factory) -> Path:
    """A full-size random SD 2.x file in Stability's layout (fp16 .ckpt with the state_dict wrapper)."""
    from ldm.model_loading import build_model

    model = randomize_(build_model(load_config(V2_INFERENCE).model, random_init=False), seed=6)
    path = tmp_path_factory.mktemp("sd2") / "v2-1_512-ema-pruned.ckpt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    del model
    torch.save({"state_dict": state, "global_step": 110000}, path)
    return path


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_full_size_sd2_trains_1024_wide_vectors_from_the_open_clip_init_word(full_v2_ckpt, tmp_path, parameterization):
    from ldm.embeddings import read_embedding_file
    from ldm.modules.encoders.open_clip_tokenizer import load_open_clip_tokenizer

    data = make_concept(tmp_path / "cat", n=2, size=256)
    logs = tmp_path / "logs"
    overrides = ["model.params.parameterization=v"] if parameterization == "v" else []
    result = run_main(
        [
            *("--base", "configs/stable-diffusion/v2-finetune.yaml", "-t", "--actual_resume", str(full_v2_ckpt)),
            *("-n", "full-sd2", "--data_root", str(data), "--init_word", "cat", "-l", str(logs)),
            *("--max_steps", "2", "--precision", "bf16"),
            "data.params.batch_size=1",
            "data.params.num_workers=0",
            "data.params.train.params.size=256",
            "lightning.callbacks.image_logger.params.disabled=true",
            *overrides,
        ],
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (term,) = read_embedding_file(only_run_dir(logs) / "checkpoints" / "embeddings.pt")
    assert term.step == 2 and term.vectors.shape == (1, 1024) and torch.isfinite(term.vectors).all()

    # Two AdamW steps of lr 5e-3 leave the vector next to the OpenCLIP embedding row of "cat", far from others.
    rows = torch.load(full_v2_ckpt, weights_only=True)["state_dict"][TOKEN_EMBEDDING].float()
    (cat,) = load_open_clip_tokenizer()("cat", add_special_tokens=False)["input_ids"]
    moved = term.vectors[0] - rows[cat]
    assert 0 < moved.abs().max() < 0.05, moved.abs().max()
    others = torch.cat([rows[:cat], rows[cat + 1 :]])
    assert (others - term.vectors[0]).abs().amax(dim=1).min() > 0.05
