"""Textual-inversion training end to end on the tiny model: it learns, writes the documented run
directory, freezes every network, and refuses bad input (resume after SIGKILL: test_resume.py)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from train_helpers import (
    TINY_FINETUNE,
    bare_trainer,
    changed_tensors,
    fixed_eval_loss,
    load_images,
    make_concept,
    only_run_dir,
    run_main,
    train_args,
    trainable_model,
)

from ldm.callbacks.step_timer import STEP_TIME, StepTimer
from ldm.training.metrics_log import read_metrics


@pytest.fixture(scope="module")
def concept(tmp_path_factory) -> Path:
    return make_concept(tmp_path_factory.mktemp("data") / "reddisc")


@pytest.fixture(scope="module")
def trained(tiny_ckpt, concept, tmp_path_factory):
    """One 40-step run shared by the checks below."""
    logdir = tmp_path_factory.mktemp("logs")
    result = run_main(train_args(tiny_ckpt, concept, logdir, steps=40))
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(logdir)


def test_run_directory_layout(trained, concept):
    assert trained.name.startswith("reddisc") and trained.name.endswith("_test")
    ck = trained / "checkpoints"
    for name in ("embeddings.pt", "embeddings_gs-4.pt", "embeddings_gs-40.pt", "last.ckpt"):
        assert (ck / name).is_file(), name
    assert len(list((trained / "configs").glob("*-project.yaml"))) == 1
    assert len(list((trained / "configs").glob("*-lightning.yaml"))) == 1
    for key in ("inputs", "samples", "samples_scaled", "conditioning"):
        assert list((trained / "images" / "train").glob(f"{key}_gs-000004_*.png")), key
    assert (trained / "csv" / "metrics.csv").is_file()
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    assert (trained / "loss.png").is_file()
    assert not list(trained.rglob(".*.tmp"))  # atomic writes leave no temp files behind


def test_every_step_logs_its_wall_time(trained):
    times = read_metrics(trained, (STEP_TIME,))[STEP_TIME]
    assert [s for s, _ in times] == list(range(1, 41))
    assert all(0 < t < 600 for _, t in times)


def test_step_time_spans_every_accumulated_batch():
    """With 2 batches per optimizer step, one time per step, covering both batches."""
    logged = []
    trainer = SimpleNamespace(global_step=0)
    module = SimpleNamespace(log=lambda name, value, **_: logged.append((trainer.global_step, name, value)))
    timer = StepTimer()
    timer.on_train_start(trainer, module)
    for batch in range(6):
        time.sleep(0.01)
        trainer.global_step += batch % 2  # the optimizer steps after batches 1, 3 and 5
        timer.on_train_batch_end(trainer, module, None, None, batch)
    assert [(step, name) for step, name, _ in logged] == [(1, STEP_TIME), (2, STEP_TIME), (3, STEP_TIME)]
    assert all(value >= 0.02 for *_, value in logged)


def test_resume_checkpoint_is_small_and_holds_only_vectors(trained):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(ckpt["state_dict"]) and all(k.startswith("embedding_manager.") for k in ckpt["state_dict"])
    assert ckpt["global_step"] == 40 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert (trained / "checkpoints" / "last.ckpt").stat().st_size < 200_000


def test_snapshots_match_the_vectors_of_their_step(trained):
    from ldm.embeddings import read_embedding_file

    final = read_embedding_file(trained / "checkpoints" / "embeddings.pt")[0]
    at40 = read_embedding_file(trained / "checkpoints" / "embeddings_gs-40.pt")[0]
    at4 = read_embedding_file(trained / "checkpoints" / "embeddings_gs-4.pt")[0]
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    (vec_key,) = [k for k in ckpt if "initial" not in k]
    assert torch.equal(at40.vectors, final.vectors) and torch.equal(
        at40.vectors, ckpt[vec_key].reshape(at40.vectors.shape)
    )
    assert at40.step == 40 and at4.step == 4
    assert not torch.equal(at4.vectors, at40.vectors)


def test_training_lowers_the_loss_of_the_concept(trained, tiny_ckpt, concept):
    from ldm.model_loading import load_model_from_config

    model = load_model_from_config(TINY_FINETUNE, tiny_ckpt)
    images = load_images(concept)
    before = fixed_eval_loss(model, images, "a photo of *")
    model.embedding_manager.load(trained / "checkpoints" / "embeddings.pt")
    after = fixed_eval_loss(model, images, "a photo of *")
    assert after < before, (before, after)


def test_only_the_placeholder_vectors_change(tiny_ckpt, concept, tmp_path):
    """Train in-process for a few steps and compare every tensor of the model before and after."""
    from omegaconf import OmegaConf

    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(TINY_FINETUNE)
    cfg.data.params.train.params.data_root = str(concept)
    model = trainable_model(cfg, tiny_ckpt)
    data = instantiate_from_config(cfg.data)
    changed = changed_tensors(model, lambda: bare_trainer(tmp_path, 5).fit(model, data))
    assert changed and all(k.startswith("embedding_manager.") and "initial" not in k for k in changed), changed


# -- bad input: one line on stderr, exit 2, nothing written ----------------------------------------


def _bad(args: list[str], logdir: Path) -> str:
    result = run_main(args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert not logdir.exists() or not any(logdir.iterdir())
    return lines[0]


def test_bad_inputs_each_give_one_line(tiny_ckpt, concept, tmp_path):
    logs = tmp_path / "logs"
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = make_concept(tmp_path / "corrupt", n=2)
    (corrupt / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")

    def args(data=concept, *extra, steps=4, init_word="sculpture"):
        return train_args(tiny_ckpt, data, logs, steps, extra, init_word=init_word)

    twice = (
        "--placeholder_string",
        "*",
        "--placeholder_string",
        "*",
        "--data_root",
        str(concept),
        "--init_word",
        "dog",
    )
    cases = {
        "missing": args(tmp_path / "missing"),
        "empty": args(empty),
        "broken.png": args(corrupt),
        "init": args(init_word="   "),
        "photo": args(concept, "--placeholder_string", "photo"),
        "*": args(concept, *twice),
        "schedule": args(concept, "model.params.training.lr_schedule_string=fast please"),
        "max_steps": args(steps=0),
        "--gpus": args(concept, "--gpus", "zero"),
    }
    # Each is refused before any training starts; two at a time halves the wait on 2 cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        lines = dict(zip(cases, pool.map(lambda a: _bad(a, logs), cases.values())))
    for needle, line in lines.items():
        assert needle in (line.lower() if needle == "init" else line), line


def test_ddp_two_cpu_processes_sync_and_write_once(tiny_ckpt, concept, tmp_path):
    logs = tmp_path / "logs"
    result = run_main(train_args(tiny_ckpt, concept, logs, 8, ("lightning.trainer.devices=2",)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vectors synchronised across 2 ranks" in result.stdout
    run_dir = only_run_dir(logs)  # both ranks agreed on one run directory
    assert len(list((run_dir / "configs").glob("*-project.yaml"))) == 1
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8
