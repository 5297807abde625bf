"""main.py refuses bad input before it builds or writes anything, and never trains random networks by accident.

Each refusal goes through the real script: exit code 2, one line on stderr naming the input, no traceback,
and no run directory under --logdir. They all fail before Lightning or a model is imported, so they are cheap.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sd_helpers import ROOT
from train_helpers import TINY_FINETUNE, only_run_dir, run_main, tiny_env

TOY_FINETUNE = ROOT / "configs" / "toy-world" / "finetune.yaml"
SD_FINETUNE = ROOT / "configs" / "stable-diffusion" / "v1-finetune.yaml"
TOY_WEIGHTS = ROOT / "models" / "toy-world" / "toy-world.safetensors"
TOY_DATA = ROOT / "training_data" / "toy-purple-star"


def _main(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang guard only
        env=tiny_env(),
    )


def _refused(args: list[str], logdir: Path) -> str:
    """Run main.py with `args`; assert the one-line refusal and that nothing was written; return the line."""
    result = _main([*args, "-l", str(logdir)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not logdir.exists() or not any(logdir.iterdir()), list(logdir.iterdir())
    return lines[0]


def _tiny(*extra: str) -> list[str]:
    """The tiny config with random networks asked for explicitly: what fails must be the input under test."""
    return ["--base", str(TINY_FINETUNE), "-t", "--data_root", str(TOY_DATA), "model.params.random_init=true", *extra]


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  base_learning_rate: 1.0e-3\n  params: [1, 2\ndata: {}\n", encoding="utf-8")
    line = _refused(["--base", str(TINY_FINETUNE), str(bad), "-t", "--data_root", str(TOY_DATA)], tmp_path / "logs")
    assert f"--base {bad}: line 4:" in line and "line 3" in line, line


def test_config_whose_root_is_not_a_mapping_names_the_file_and_line(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("# a list, not a config\n- model\n- data\n", encoding="utf-8")
    line = _refused(["--base", str(listed), "-t", "--data_root", str(TOY_DATA)], tmp_path / "logs")
    assert f"--base {listed}: line 2:" in line and "not a mapping" in line, line


def test_config_without_a_model_section_is_refused(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("data:\n  params:\n    batch_size: 2\n", encoding="utf-8")
    assert "no model section" in _refused(["--base", str(partial), "-t"], tmp_path / "logs")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.base_learning_rate=abc", "model.base_learning_rate"),
        ("model.base_learning_rate=nan", "model.base_learning_rate"),
        ("model.base_learning_rate=inf", "model.base_learning_rate"),
        ("model.base_learning_rate=-0.005", "model.base_learning_rate"),
        ("model.base_learning_rate=0", "model.base_learning_rate"),
        ("model.base_learning_rate=1e39", "model.base_learning_rate"),
        ("model.params.training.lr_schedule=warp", "model.params.training.lr_schedule"),
        ("model.params.training.lr_schedule=a1111", "lr_schedule_string"),
        ("model.params.training.lr_schedule_string=fast please", "model.params.training.lr_schedule_string"),
        ("model.params.training.lr_schedule_string=0.01:10, 1e999", "model.params.training.lr_schedule_string"),
        ("model.params.training.lr_schedule_string=2000:10, 1e-3", "model.params.training.lr_schedule_string"),
        ("model.params.training.min_lr=-1e-4", "model.params.training.min_lr"),
        ("model.params.training.lr_warmup_steps=ten", "model.params.training.lr_warmup_steps"),
        ("model.params.training.weight_decay=inf", "model.params.training.weight_decay"),
        ("model.params.training.min_snr_gamma=0", "model.params.training.min_snr_gamma"),
        ("model.params.training.embedding_reg_weight=nan", "model.params.training.embedding_reg_weight"),
        ("model.params.training.gradient_checkpointing=maybe", "model.params.training.gradient_checkpointing"),
        ("model.params.training.warmup=3", "warmup"),
        ("model.params.embedding_reg_weight=-1", "model.params.embedding_reg_weight"),
        ("model.params.scale_factor=nan", "model.params.scale_factor"),
        ("lightning.trainer.gradient_clip_val=-inf", "lightning.trainer.gradient_clip_val"),
        ("data.params.batch_size=2.5", "data.params.batch_size"),
        ("model.params.random_init=yes please", "model.params.random_init"),
        ("a.b=[1,", "a.b=[1,"),
    ],
)
def test_bad_training_value_is_refused_naming_the_key(override, needle, tmp_path):
    assert needle in _refused(_tiny(override), tmp_path / "logs")


@pytest.mark.parametrize(
    "flag", [("--max_steps", "abc"), ("--max_steps", "0"), ("--num_nodes", "-1"), ("--gpus", "zero")]
)
def test_bad_flag_is_one_line_naming_it(flag, tmp_path):
    assert flag[0] in _refused(_tiny(*flag), tmp_path / "logs")


def test_training_without_weights_names_actual_resume(tmp_path):
    line = _refused(["--base", str(SD_FINETUNE), "-t", "--data_root", str(TOY_DATA)], tmp_path / "logs")
    assert "--actual_resume" in line, line
    line = _refused(["--base", str(TINY_FINETUNE), "-t", "--data_root", str(TOY_DATA)], tmp_path / "logs")
    assert "--actual_resume" in line, line


def test_missing_weights_are_named(tmp_path):
    logs = tmp_path / "logs"
    toy = ["--base", str(TOY_FINETUNE), "-t", "--data_root", str(TOY_DATA)]
    line = _refused([*toy, "model.params.ckpt_path=models/toy-world/gone.safetensors"], logs)
    assert "model.params.ckpt_path" in line and "gone.safetensors" in line, line
    line = _refused([*toy, "--actual_resume", str(tmp_path / "nope.ckpt")], logs)
    assert "--actual_resume" in line and "nope.ckpt" in line, line


def test_random_init_and_weights_together_are_refused(tmp_path):
    line = _refused(
        ["--base", str(TOY_FINETUNE), "-t", "--data_root", str(TOY_DATA), "model.params.random_init=true"],
        tmp_path / "logs",
    )
    assert "random_init" in line and "ckpt_path" in line, line


def test_corrupt_resume_checkpoint_is_read_before_anything_starts(tmp_path):
    run = tmp_path / "logs" / "concept2026-01-01T00-00-00_x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "configs").mkdir()
    (run / "configs" / "2026-01-01T00-00-00-project.yaml").write_text(TOY_FINETUNE.read_text(), encoding="utf-8")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _main(["-r", str(run)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: -r {run}") and "last.ckpt" in lines[0], result.stderr
    assert "GPU available" not in result.stdout + result.stderr  # refused before a Trainer existed
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _main_module():
    spec = importlib.util.spec_from_file_location("main_under_test", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_config_trains_the_committed_weights_without_actual_resume(tmp_path, monkeypatch):
    from ldm.training.launch import check_inputs
    from ldm.training.run import build_model

    monkeypatch.chdir(tmp_path)  # the config's relative ckpt_path is found from any working directory
    args = (
        _main_module()
        .build_parser()
        .parse_args(["--base", str(TOY_FINETUNE), "-t", "--data_root", str(TOY_DATA), "-l", str(tmp_path / "logs")])
    )
    _, config = check_inputs(args, [])
    assert Path(config.actual_resume) == TOY_WEIGHTS  # recorded in the run's config, so -r uses it too
    model = build_model(config, config.actual_resume, None)
    ours, committed = model.state_dict(), load_file(str(TOY_WEIGHTS))
    networks = [k for k in committed if k.startswith(("model.", "first_stage_model.", "cond_stage_model."))]
    assert len(networks) > 400
    for key in networks:
        assert torch.equal(ours[key].to(committed[key].dtype), committed[key]), key


def test_random_networks_train_only_when_asked_and_lightning_banner_stays_off_stderr(tmp_path):
    logs = tmp_path / "logs"
    result = run_main([*_tiny("--max_steps", "1", "-l", str(logs))])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "random_init: true" in result.stdout  # the run says what it trains on
    assert result.stderr == "", result.stderr  # Lightning's GPU/TPU/Tip banner and warnings go to the log
    assert "weights_only" not in result.stdout and "eval mode" not in result.stdout  # debug-only noise
    assert (only_run_dir(logs) / "checkpoints" / "embeddings.pt").is_file()
