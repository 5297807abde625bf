"""Textual inversion end to end on the tiny SD 2.x-shaped model (OpenCLIP text tower, linear transformer
projections): main.py trains a word, the loss on a fixed batch goes down, only the vectors change, and the
word loads back into invoke.py and draws an image (an SD 1.x-wide file beside it is skipped, its width and family
named); the v-prediction variant (the 768-v models) trains too."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import ROOT, TINY_V2_CONFIG
from train_helpers import (
    bare_trainer,
    changed_tensors,
    make_concept,
    only_run_dir,
    run_invoke,
    run_main,
    trainable_model,
)

TINY_V2_FINETUNE = ROOT / "tests" / "fixtures" / "tiny-v2-finetune.yaml"
STEPS = 12  # enough for the fixed-batch loss to fall (measured: it falls at each 4-step snapshot of this run)
V_OVERRIDE = "model.params.parameterization=v"


def v2_train_args(ckpt: Path, data: Path, logdir: Path, *extra: str) -> list[str]:
    return [
        *("--base", str(TINY_V2_FINETUNE), "-t", "--actual_resume", str(ckpt), "-n", "sd2"),
        *("--data_root", str(data), "--init_word", "sculpture", "-l", str(logdir)),
        *("--max_steps", str(STEPS), "--scale_lr", "false", "-s", "7", *extra),
    ]


@pytest.fixture(scope="module")
def concept(tmp_path_factory) -> Path:
    return make_concept(tmp_path_factory.mktemp("data") / "reddisc")


@pytest.fixture(scope="module")
def runs(tiny_v2_ckpt, concept, tmp_path_factory):
    """parameterization -> the run directory of one main.py run with it (each trained once, when first asked)."""
    done: dict[str, Path] = {}

    def run(parameterization: str) -> Path:
        if parameterization not in done:
            logdir = tmp_path_factory.mktemp(f"logs-{parameterization}")
            extra = (V_OVERRIDE,) if parameterization == "v" else ()
            result = run_main(v2_train_args(tiny_v2_ckpt, concept, logdir, *extra))
            assert result.returncode == 0, result.stderr[-3000:]
            done[parameterization] = only_run_dir(logdir)
        return done[parameterization]

    return run


def finetune_config(concept: Path, parameterization: str):
    cfg = OmegaConf.load(TINY_V2_FINETUNE)
    cfg.data.params.train.params.data_root = str(concept)
    cfg.model.params.parameterization = parameterization
    return cfg


def fixed_batch_loss(cfg, ckpt: Path, embedding: Path | None) -> float:
    """The training objective's loss (target: the noise, or v) on one fixed batch, averaged over 8 fixed
    (timestep, noise) draws, with the init word's vectors or those of `embedding`."""
    from ldm.training.attach import attach_objective
    from ldm.training.run import build_model
    from ldm.util import instantiate_from_config

    model = build_model(copy.deepcopy(cfg), str(ckpt), str(embedding) if embedding else None)
    objective = attach_objective(model)
    data = instantiate_from_config(cfg.data)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    losses = []
    with torch.no_grad():
        for k in range(8):  # the objective seeds t and the noise from the batch's first sample index
            _, logs = objective({**batch, "k": torch.full_like(batch["k"], k)})
            losses.append(logs["loss_simple"])
    return torch.stack(losses).mean().item()


# v is slow-marked for time: the v target itself is checked step by step in test_v_training.py.
@pytest.mark.parametrize("parameterization", ["eps", pytest.param("v", marks=pytest.mark.slow)])
def test_training_lowers_the_loss_on_a_fixed_batch(runs, tiny_v2_ckpt, concept, parameterization):
    from ldm.embeddings import read_embedding_file

    run_dir = runs(parameterization)
    (project,) = (run_dir / "configs").glob("*-project.yaml")
    assert OmegaConf.select(OmegaConf.load(project), "model.params.parameterization", default="eps") == parameterization

    (term,) = read_embedding_file(run_dir / "checkpoints" / "embeddings.pt")
    assert term.dim == 32 and torch.isfinite(term.vectors).all()  # the tiny OpenCLIP tower's width
    cfg = finetune_config(concept, parameterization)
    before = fixed_batch_loss(cfg, tiny_v2_ckpt, None)
    after = fixed_batch_loss(cfg, tiny_v2_ckpt, run_dir / "checkpoints" / "embeddings.pt")
    assert torch.isfinite(torch.tensor([before, after])).all()
    assert after < before, (parameterization, before, after)


def test_only_the_placeholder_vectors_change(tiny_v2_ckpt, concept, tmp_path):
    """Train a v model in-process for a few steps and compare every tensor of the model before and after."""
    from ldm.util import instantiate_from_config

    cfg = finetune_config(concept, "v")
    model = trainable_model(cfg, tiny_v2_ckpt)
    assert model.parameterization == "v"
    data = instantiate_from_config(cfg.data)
    changed = changed_tensors(model, lambda: bare_trainer(tmp_path, 3).fit(model, data))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and trainable and set(changed) <= trainable, (changed, trainable)
    assert not any(k.startswith(("model.", "first_stage_model.", "cond_stage_model.")) for k in changed), changed


def test_the_trained_word_draws_in_invoke(runs, tiny_v2_ckpt, tmp_path):
    import numpy as np
    from PIL import Image

    from ldm.embeddings import LoadedEmbedding, read_embedding_file, write_embedding_file
    from ldm.embeddings.library import prompt_name

    run_dir = runs("eps")
    embedding = run_dir / "checkpoints" / "embeddings.pt"
    folder = tmp_path / "embeddings"  # holds an SD 1.x-wide file: skipped with a warning naming it
    folder.mkdir()
    write_embedding_file(folder / "old-sd1.pt", LoadedEmbedding("old-sd1", torch.zeros(1, 768)))
    commands = ['"a photo of *" -S 5 -A ddim', '"a photo of sculpture" -S 5 -A ddim', "q"]
    extra = ("--embedding_path", str(embedding), "--embedding_directory", str(folder))
    result = run_invoke(tiny_v2_ckpt, TINY_V2_CONFIG, commands, tmp_path, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = [line for line in result.stderr.splitlines() if "old-sd1.pt" in line]
    assert "768 wide" in warning and "SD 1.x (CLIP ViT-L)" in warning and "takes 32" in warning, warning
    assert not [line for line in result.stdout.splitlines() if line.startswith("** ")], result.stdout
    word, init = tmp_path / "out" / "000000.5.png", tmp_path / "out" / "000001.5.png"
    pixels = [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (word, init)]
    assert pixels[0].shape == (64, 64, 3) and pixels[0].std() > 0
    used = [json.loads(Image.open(p).text["sd-metadata"])["image"].get("embeddings") for p in (word, init)]
    assert used[0] == [prompt_name(read_embedding_file(embedding)[0])] and not used[1]  # "*" named the trained word
    # The learned vectors, not the init word's, reached the UNet: same seed, another image.
    assert np.abs(pixels[0] - pixels[1]).max() > 0
