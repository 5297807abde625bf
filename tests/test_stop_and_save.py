"""Stop (SIGTERM) saves first and Save now (a request file) writes a snapshot: main.py on the tiny SD 1.x.

A run stopped between two snapshots keeps the step it stopped at (snapshot, latest embedding, last.ckpt),
and `-r` then ends where the uninterrupted run ends; the loss history survives the resume.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sd_helpers import ROOT
from train_helpers import make_concept, only_run_dir, run_main, tiny_env, train_args

from ldm.callbacks.save_request import SAVE_REQUEST
from ldm.embeddings import read_embedding_file
from ldm.training.metrics_log import LOSS, read_metrics
from ldm.training.run import RUN_NOW_ENV

STEPS, EVERY, STOP_AT = 8, 6, 4  # the periodic snapshot comes at 6; the stop at 4 is between saves


def _vectors(path: Path) -> torch.Tensor:
    return read_embedding_file(path)[0].vectors


def _saved_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def _args(ckpt: Path, data: Path, logdir: Path) -> list[str]:
    every = f"lightning.modelcheckpoint.params.every_n_train_steps={EVERY}"
    return train_args(ckpt, data, logdir, steps=STEPS, extra=("model.params.training.log_every_n_steps=1", every))


def _stop_at(ckpt: Path, data: Path, logdir: Path) -> Path:
    """Run until STOP_AT and send SIGTERM there (from inside, so the step is known); the run folder."""
    stopped = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kill_at_step.py"), str(STOP_AT), *_args(ckpt, data, logdir)],
        cwd=ROOT,
        env={**tiny_env(), "KILL_AT_STEP_SIGNAL": "TERM"},
        capture_output=True,
        text=True,
        timeout=600,  # hang guard only
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    run_dir = only_run_dir(logdir)
    assert f"stopped at step {STOP_AT}; resume with: python main.py -r {run_dir}" in stopped.stdout
    return run_dir


def test_sigterm_saves_a_snapshot_and_last_ckpt_at_the_step_it_stops(tiny_ckpt, tmp_path):
    run_dir = _stop_at(tiny_ckpt, make_concept(tmp_path / "data"), tmp_path / "logs")
    ck = run_dir / "checkpoints"
    # Saved at the stop, not at the last periodic save (there was none yet)
    assert _saved_step(run_dir) == STOP_AT
    assert read_embedding_file(ck / f"embeddings_gs-{STOP_AT}.pt")[0].step == STOP_AT
    assert read_embedding_file(ck / "embeddings.pt")[0].step == STOP_AT
    assert [s for s, _ in read_metrics(run_dir)[LOSS]] == list(range(1, STOP_AT + 1))


@pytest.mark.slow  # three runs: about 30 s of CPU
def test_a_stopped_run_resumed_ends_like_the_uninterrupted_run(tiny_ckpt, tmp_path):
    data = make_concept(tmp_path / "data")
    reference = run_main(_args(tiny_ckpt, data, tmp_path / "straight"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_dir = only_run_dir(tmp_path / "straight")
    run_dir = _stop_at(tiny_ckpt, data, tmp_path / "stopped")

    resumed = run_main(["-r", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _saved_step(run_dir) == STEPS
    expected = _vectors(reference_dir / "checkpoints" / "embeddings.pt")
    assert torch.allclose(_vectors(run_dir / "checkpoints" / "embeddings.pt"), expected, atol=1e-5, rtol=0)
    # The loss history before the stop is kept (Lightning's CSV logger deletes metrics.csv on resume)
    losses = read_metrics(run_dir)[LOSS]
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))
    straight = dict(read_metrics(reference_dir)[LOSS])
    assert all(abs(straight[s] - v) < 1e-5 for s, v in losses)


def test_a_save_request_writes_a_snapshot_at_the_next_step_and_is_consumed(tiny_ckpt, tmp_path):
    data = make_concept(tmp_path / "data")
    now = "2026-01-01T00-00-00"
    run_dir = tmp_path / "logs" / f"data{now}_test"
    run_dir.mkdir(parents=True)
    (run_dir / SAVE_REQUEST).touch()  # asked for before the first step: answered after it
    args = train_args(tiny_ckpt, data, tmp_path / "logs", steps=3)
    result = run_main(args, env={**tiny_env(), RUN_NOW_ENV: now})
    assert result.returncode == 0, result.stderr[-3000:]
    ck = run_dir / "checkpoints"
    assert read_embedding_file(ck / "embeddings_gs-1.pt")[0].step == 1
    assert not (run_dir / SAVE_REQUEST).exists()
    assert sorted(p.name for p in ck.glob("embeddings_gs-*")) == ["embeddings_gs-1.pt"]  # once, not every step
