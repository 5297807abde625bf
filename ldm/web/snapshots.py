"""Training runs' embedding files, named by ids: a run is a folder of settings.logs_dir, a snapshot a file
of its checkpoints/ folder (`embeddings_gs-N.pt` every N steps, `embeddings.pt` the latest; SDXL runs
write `.safetensors`)."""

from __future__ import annotations

from pathlib import Path

from ldm.evaluation.compare_embeddings import snapshot_step
from ldm.web.security import WebInputError, check_id, child
from ldm.web.settings import WebSettings

SUFFIXES = (".pt", ".safetensors")


def _is_snapshot(path: Path) -> bool:
    return path.is_file() and path.name.startswith("embeddings") and path.suffix in SUFFIXES


def run_snapshots(settings: WebSettings, run: str) -> list[dict]:
    """A run's embedding files: the step snapshots by step, then the latest (`embeddings.*`)."""
    folder = child(settings.logs_dir, run, what="run")
    if not folder.is_dir():
        raise WebInputError(f"no run {run!r} in {settings.logs_dir.name}/; pick one from the list", status=404)
    checkpoints = folder / "checkpoints"
    files = [p for p in checkpoints.iterdir() if _is_snapshot(p)] if checkpoints.is_dir() else []
    steps = [p for p in files if snapshot_step(p) is not None]
    latest = [p for p in files if snapshot_step(p) is None]
    steps.sort(key=lambda p: (snapshot_step(p), p.name))
    return [{"file": p.name, "step": snapshot_step(p)} for p in steps + sorted(latest)]


def list_runs(settings: WebSettings) -> list[dict]:
    """Runs that have at least one embedding file, newest first, each with its snapshots."""
    root = settings.logs_dir
    if not root.is_dir():
        return []
    runs = []
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for folder in sorted(folders, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        try:
            check_id(folder.name, "run")
        except WebInputError:
            continue  # a folder no request could name
        snaps = run_snapshots(settings, folder.name)
        if snaps:
            runs.append({"run": folder.name, "snapshots": snaps})
    return runs


def snapshot_path(settings: WebSettings, run: str, snapshot: str) -> Path:
    """logs/<run>/checkpoints/<snapshot>: an embeddings*.pt/.safetensors file main.py wrote (404 if absent)."""
    check_id(snapshot, "snapshot")
    if not (snapshot.startswith("embeddings") and snapshot.endswith(SUFFIXES)):
        raise WebInputError(f"snapshot {snapshot!r} is not an embeddings file of a run; pick one from the list")
    path = child(settings.logs_dir, run, "checkpoints", snapshot, what="snapshot")
    if not path.is_file():
        raise WebInputError(f"run {run!r} has no snapshot {snapshot!r}; pick one from the list", status=404)
    return path
