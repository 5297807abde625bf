"""`main.py -r`: a run SIGKILLed between two snapshots and resumed ends where the uninterrupted run ends, on
every config family the project ships; a finished run says so; --max_steps trains further; a diverged
first step keeps the starting embedding and exits with one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sd_helpers import ROOT
from train_helpers import (
    TINY_FINETUNE,
    bare_trainer,
    make_concept,
    make_mixed_photos,
    only_run_dir,
    run_main,
    tiny_env,
    trainable_model,
)

from ldm.embeddings import read_embedding_file
from ldm.embeddings.formats import write_embedding_file
from ldm.embeddings.loaded import LoadedEmbedding

STEPS, EVERY, KILL_AT = 16, 6, 9  # snapshots at 6 and 12; the kill at 9 loses steps 7-9
TOY_CONFIG = ROOT / "configs" / "toy-world" / "finetune.yaml"
TOY_WEIGHTS = ROOT / "models" / "toy-world" / "toy-world.safetensors"
TINY_SDXL_FINETUNE = ROOT / "tests" / "fixtures" / "tiny-sdxl-finetune.yaml"


@pytest.fixture(scope="module")
def concept(tmp_path_factory) -> Path:
    return make_concept(tmp_path_factory.mktemp("data") / "reddisc")


def family_args(family: str, tiny_ckpt: Path, concept: Path, logdir: Path, steps: int = STEPS) -> list[str]:
    """A fresh run of one shipped config family. -s and --scale_lr are given here only: -r must keep them.
    A new family (SD 2.x, SDXL) adds its tiny config here and a resume test below."""
    families = {
        "tiny-sd1": ["--base", str(TINY_FINETUNE), "--actual_resume", str(tiny_ckpt), "--data_root", str(concept)]
        + ["--init_word", "sculpture", "--scale_lr", "false"],
        "toy-world": ["--base", str(TOY_CONFIG), "--actual_resume", str(TOY_WEIGHTS)]
        + ["--data_root", str(ROOT / "training_data" / "toy-purple-star"), "--init_word", "shape"],
        # tiny_ckpt is the tiny SDXL file here, concept a folder of mixed-aspect photos (bucketed)
        "tiny-sdxl": ["--base", str(TINY_SDXL_FINETUNE), "--actual_resume", str(tiny_ckpt), "--data_root", str(concept)]
        + ["--init_word", "cat", "--scale_lr", "false"],
    }
    # The same tiny model with every knob the step stream depends on moved off its default.
    families["tiny-sd1-knobs"] = families["tiny-sd1"] + [
        "model.params.training.latent_sampling=random",
        "model.params.training.lr_schedule=cosine",
        "model.params.training.lr_warmup_steps=3",
        "lightning.trainer.accumulate_grad_batches=2",
    ]
    base = families[family]
    every = f"lightning.modelcheckpoint.params.every_n_train_steps={EVERY}"
    return [*base, "-t", "-n", "resume", "-l", str(logdir), "--max_steps", str(steps), "-s", "7", every]


def vectors(path: Path) -> torch.Tensor:
    return read_embedding_file(path)[0].vectors


def saved_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def trained(args: list[str]) -> Path:
    result = run_main(args)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(Path(args[args.index("-l") + 1]))


@pytest.fixture(scope="module")
def tiny_reference(tiny_ckpt, concept, tmp_path_factory) -> Path:
    """The uninterrupted tiny run (shared; tests that train further work on a copy)."""
    return trained(family_args("tiny-sd1", tiny_ckpt, concept, tmp_path_factory.mktemp("straight")))


def _resume_after_sigkill(family: str, reference: Path, tiny_ckpt: Path, concept: Path, tmp_path: Path) -> None:
    ext = ".safetensors" if family == "tiny-sdxl" else ".pt"  # SDXL embeddings are clip_l/clip_g files
    killed = tmp_path / "killed"
    args = family_args(family, tiny_ckpt, concept, killed)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kill_at_step.py"), str(KILL_AT), *args],
        cwd=ROOT,
        env=tiny_env(),
        capture_output=True,
        text=True,
        timeout=600,  # hang guard only
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    run_dir = only_run_dir(killed)
    ck = run_dir / "checkpoints"
    # Killed between snapshots: the step-6 state is on disk, steps 7-9 are lost, step 12 never came.
    assert saved_step(run_dir) == EVERY and not (ck / f"embeddings_gs-{2 * EVERY}{ext}").exists()
    assert read_embedding_file(ck / f"embeddings{ext}")[0].step == EVERY

    resumed = run_main(["-r", str(run_dir)])  # nothing repeated: seed and lr rule come from the run's record
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert saved_step(run_dir) == STEPS
    for name in (f"embeddings_gs-{2 * EVERY}{ext}", f"embeddings{ext}"):
        expected = vectors(reference / "checkpoints" / name)
        assert torch.allclose(vectors(ck / name), expected, atol=1e-5, rtol=0), name
    assert not torch.allclose(vectors(ck / f"embeddings_gs-{EVERY}{ext}"), vectors(ck / f"embeddings{ext}"))
    for f in run_dir.rglob("*"):
        if f.suffix in (".pt", ".ckpt"):
            torch.load(f, weights_only=True)  # every file loads: none is truncated
        elif f.suffix == ".safetensors":
            read_embedding_file(f)


@pytest.mark.slow  # the toy-world SIGKILL resume test covers the same path in the default suite
def test_tiny_sd1_resume_after_sigkill_equals_uninterrupted_run(tiny_reference, tiny_ckpt, concept, tmp_path):
    _resume_after_sigkill("tiny-sd1", tiny_reference, tiny_ckpt, concept, tmp_path)


def test_toy_world_resume_after_sigkill_equals_uninterrupted_run(tiny_ckpt, concept, tmp_path):
    reference = trained(family_args("toy-world", tiny_ckpt, concept, tmp_path / "straight"))
    _resume_after_sigkill("toy-world", reference, tiny_ckpt, concept, tmp_path)


@pytest.mark.slow
def test_resume_after_sigkill_with_random_latents_cosine_lr_and_accumulation(tiny_ckpt, concept, tmp_path):
    reference = trained(family_args("tiny-sd1-knobs", tiny_ckpt, concept, tmp_path / "straight"))
    _resume_after_sigkill("tiny-sd1-knobs", reference, tiny_ckpt, concept, tmp_path)


@pytest.mark.slow
def test_tiny_sdxl_resume_after_sigkill_equals_uninterrupted_run(tiny_sdxl_ckpt, tmp_path):
    """SDXL: the bucketed stream, both encoders' vectors and the clip_l/clip_g snapshots resume exactly."""
    photos = make_mixed_photos(tmp_path / "mixed")
    reference = trained(family_args("tiny-sdxl", tiny_sdxl_ckpt, photos, tmp_path / "straight"))
    _resume_after_sigkill("tiny-sdxl", reference, tiny_sdxl_ckpt, photos, tmp_path)


def test_resume_keeps_the_runs_seed(tiny_reference):
    """-s with another seed than the run's would silently train another stream: refused in one line."""
    result = run_main(["-r", str(tiny_reference), "-s", "8", "--max_steps", str(STEPS + 4)])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: -s 8") and "-s 7" in lines[0], lines
    assert saved_step(tiny_reference) == STEPS


def test_resume_of_a_finished_run_says_so(tiny_reference):
    ck = tiny_reference / "checkpoints"
    before = {f.name: f.read_bytes() for f in ck.iterdir()}
    result = run_main(["-r", str(tiny_reference)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.strip() == ""
    last = result.stdout.strip().splitlines()[-1]
    assert "finished" in last and f"{STEPS} steps" in last and "--max_steps" in last, last
    assert "Epoch" not in result.stdout  # no progress bar of a run that has nothing to do
    assert {f.name: f.read_bytes() for f in ck.iterdir()} == before


def test_resume_with_a_larger_max_steps_trains_further(tiny_reference, tmp_path):
    run_dir = shutil.copytree(tiny_reference, tmp_path / tiny_reference.name)
    result = run_main(["-r", str(run_dir), "--max_steps", str(STEPS + 4)])
    assert result.returncode == 0, result.stderr[-3000:]
    ck = run_dir / "checkpoints"
    assert saved_step(run_dir) == STEPS + 4
    assert (ck / f"embeddings_gs-{3 * EVERY}.pt").is_file()
    final = read_embedding_file(ck / "embeddings.pt")[0]
    assert final.step == STEPS + 4 and torch.isfinite(final.vectors).all()
    assert not torch.equal(final.vectors, vectors(tiny_reference / "checkpoints" / "embeddings.pt"))


def test_nan_first_step_keeps_the_starting_embedding_and_says_so(tiny_ckpt, concept, tmp_path):
    """Finite but absurd starting vectors (1e30) overflow the text encoder: the first loss is NaN."""
    start = tmp_path / "huge.pt"
    write_embedding_file(start, LoadedEmbedding("*", torch.full((1, 32), 1e30), token="*"))
    logs = tmp_path / "logs"
    args = family_args("tiny-sd1", tiny_ckpt, concept, logs, steps=4)
    result = run_main([*args, "--embedding_manager_ckpt", str(start)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: step 1: loss is NaN"), result.stderr[-3000:]
    assert "learning rate" in lines[0] and "embeddings.pt" in lines[0]
    written = read_embedding_file(only_run_dir(logs) / "checkpoints" / "embeddings.pt")[0]
    assert written.step == 0 and torch.equal(written.vectors, vectors(start))


def test_vectors_that_turn_non_finite_are_replaced_by_the_last_good_ones(tiny_ckpt, concept, tmp_path):
    """Infinite gradients (an overflow) make AdamW's first update NaN: the run stops, the start is kept."""
    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from ldm.callbacks import EmbeddingSnapshot
    from ldm.errors import TrainingDivergedError
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(TINY_FINETUNE)
    cfg.data.params.train.params.data_root = str(concept)
    model = trainable_model(cfg, tiny_ckpt, lr=5e-3)

    class InfiniteGradients(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            for param in pl_module.embedding_manager.embedding_parameters():
                param.grad.fill_(float("inf"))

    start = [p.detach().clone() for p in model.embedding_manager.embedding_parameters()]
    trainer = bare_trainer(tmp_path, 3, [InfiniteGradients(), EmbeddingSnapshot(str(tmp_path), every_n_steps=1)])
    with pytest.raises(TrainingDivergedError, match="step 1: the learned vectors became NaN/inf"):
        trainer.fit(model, instantiate_from_config(cfg.data))
    written = read_embedding_file(tmp_path / "embeddings.pt")[0]
    assert written.step == 0 and torch.equal(written.vectors.flatten(), torch.cat([p.flatten() for p in start]))
    assert not (tmp_path / "embeddings_gs-1.pt").exists()


def test_resume_policy_prefers_the_flag_then_the_record_then_the_default(tmp_path):
    from omegaconf import OmegaConf

    from ldm.errors import ConfigError
    from ldm.training.resume_policy import RunFinished, check_unfinished, run_scale_lr, run_seed

    recorded = OmegaConf.create({"model": {"params": {"training": {"seed": 7}}}, "scale_lr": False})
    assert run_seed(recorded, None, resuming=True) == 7 and run_seed(recorded, 7, resuming=True) == 7
    assert run_seed(OmegaConf.create({}), None, resuming=False) == 23
    assert run_seed(recorded, 9, resuming=False) == 9  # a fresh run from a config with a seed: the flag wins
    assert run_scale_lr(recorded, None, resuming=True) is False
    assert run_scale_lr(OmegaConf.create({}), None, resuming=False) is True
    with pytest.raises(ConfigError, match="-s 9.*-s 7"):
        run_seed(recorded, 9, resuming=True)
    with pytest.raises(ConfigError, match="--scale_lr true.*--scale_lr false"):
        run_scale_lr(recorded, True, resuming=True)
    check_unfinished(tmp_path, 10, 11)
    with pytest.raises(RunFinished, match="--max_steps 20"):
        check_unfinished(tmp_path, 10, 10)


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_progress_bar_counts_the_whole_run(kind):
    """After a resume at batch 130 of 400 the bar reads 'train 131/400', not 'Epoch 0/-2 131/270'."""
    from types import SimpleNamespace

    from ldm.callbacks.step_progress import DESCRIPTION, RichStepProgressBar, TQDMStepProgressBar

    bar = RichStepProgressBar() if kind == "rich" else TQDMStepProgressBar()
    bar._trainer = SimpleNamespace(max_steps=400, accumulate_grad_batches=2, global_step=130)
    assert bar.total_train_batches == 800
    if kind == "rich":
        assert bar._get_train_description(0) == DESCRIPTION
