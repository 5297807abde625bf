"""What a run folder says about its run: step, losses and learning rates, preview grids, snapshots.

The folder is the command line's (logs/<run>/); the UI adds `web-run.json` (how it was started and how
its process ended) and `train.log` (the child's output). Runs started from a terminal have neither and
are read from their files alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ldm.callbacks.embedding_snapshot import LATEST_STEM, SNAPSHOT_PREFIX
from ldm.callbacks.save_request import SAVE_REQUEST
from ldm.fileio import atomic_path
from ldm.training.metrics_log import LOSS, LR, read_metrics

RECORD, LOG = "web-run.json", "train.log"
PREVIEW_PREFIX = "samples_scaled_gs-"  # the guided grid of the preview prompt (ImageLogger's file names)
SNAPSHOT = re.compile(rf"{SNAPSHOT_PREFIX}(\d+)\.(pt|safetensors)")
STATES = ("running", "stopped", "finished", "crashed")
LOG_TAIL = 20


def read_record(logdir: Path) -> dict[str, Any]:
    try:
        record = json.loads((logdir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(logdir: Path, record: dict[str, Any]) -> None:
    with atomic_path(logdir / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")


def is_run(logdir: Path) -> bool:
    return logdir.is_dir() and ((logdir / RECORD).is_file() or (logdir / "configs").is_dir())


def previews(logdir: Path) -> list[str]:
    """File names of the preview grids, oldest first (the step is zero-padded in the name)."""
    folder = logdir / "images" / "train"
    return sorted(p.name for p in folder.glob(f"{PREVIEW_PREFIX}*.png")) if folder.is_dir() else []


def snapshots(logdir: Path) -> list[str]:
    """File names of the embedding snapshots `embeddings_gs-N.*`, by step."""
    folder = logdir / "checkpoints"
    found = [(int(m.group(1)), p.name) for p in folder.glob(f"{SNAPSHOT_PREFIX}*") if (m := SNAPSHOT.fullmatch(p.name))]
    return [name for _, name in sorted(found)]


def latest_embedding(logdir: Path) -> str | None:
    for suffix in (".pt", ".safetensors"):
        if (logdir / "checkpoints" / f"{LATEST_STEM}{suffix}").is_file():
            return f"{LATEST_STEM}{suffix}"
    return None


def max_steps(logdir: Path, record: dict[str, Any]) -> int | None:
    """The run's max_steps: the UI's record, else the newest saved lightning config (-r may raise it)."""
    if isinstance(record.get("max_steps"), int):
        return record["max_steps"]
    configs = sorted((logdir / "configs").glob("*-lightning.yaml"), key=lambda p: p.stat().st_mtime)
    for path in reversed(configs):
        try:
            value = OmegaConf.select(OmegaConf.load(path), "lightning.trainer.max_steps")
        except Exception:  # a config being written: try the older one
            continue
        if value is not None:
            return int(value)
    return None


def log_tail(logdir: Path, lines: int = LOG_TAIL) -> list[str]:
    try:
        text = (logdir / LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def run_state(logdir: Path, record: dict[str, Any], alive: bool, step: int, total: int | None) -> str:
    """running (its process is alive), finished (reached max_steps), stopped (Stop, or SIGTERM from outside:
    exit code 0 before max_steps) or crashed (any other end; a run of no record with no resumable state)."""
    if alive:
        return "running"
    if total is not None and step >= total:
        return "finished"
    if record.get("stopped") or record.get("exit_code") == 0:
        return "stopped"
    if not record and (logdir / "checkpoints" / "last.ckpt").is_file():
        return "stopped"  # a terminal's run: killed or interrupted, it can go on from last.ckpt
    return "crashed"


def run_status(logdir: Path, alive: bool = False) -> dict[str, Any]:
    """The status JSON of one run (without eta_s, which the runner adds while it runs)."""
    record = read_record(logdir)
    metrics = read_metrics(logdir, (LOSS, LR))
    losses, lrs = metrics[LOSS], metrics[LR]
    step = losses[-1][0] if losses else 0
    total = max_steps(logdir, record)
    state = run_state(logdir, record, alive, step, total)
    status = {
        "run": logdir.name,
        "state": state,
        "step": step,
        "max_steps": total,
        "eta_s": None,
        "losses": losses,
        "lrs": lrs,
        "previews": previews(logdir),
        "snapshots": snapshots(logdir),
        "latest": latest_embedding(logdir),
        "resumable": state in ("stopped", "crashed") and (logdir / "checkpoints" / "last.ckpt").is_file(),
        "save_pending": (logdir / SAVE_REQUEST).is_file(),
        "command": record.get("command"),
        "log_tail": log_tail(logdir) if state == "crashed" else [],
    }
    return status
