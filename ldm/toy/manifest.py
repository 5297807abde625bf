"""MANIFEST.json for committed weights: sha256 and size per file, the command that made them, figures."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from ldm.fileio import atomic_path

PathLike = str | Path
MANIFEST = "MANIFEST.json"


def sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: PathLike, files: Sequence[PathLike], command: str, extra: dict) -> Path:
    folder = Path(folder)
    entries = {Path(f).name: {"sha256": sha256(f), "bytes": Path(f).stat().st_size} for f in files}
    path = folder / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"command": command, "files": entries, **extra}, indent=2) + "\n")
    return path


def verify_manifest(folder: PathLike) -> list[str]:
    """Names of files whose sha256 differs from the manifest (empty when all match)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    return [
        name
        for name, entry in manifest["files"].items()
        if not (folder / name).is_file() or sha256(folder / name) != entry["sha256"]
    ]
