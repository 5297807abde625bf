"""Atomic writes of plain dicts of tensors: safetensors for a `.safetensors` name, else a pickle that any
`torch.load(weights_only=True)` reads (only tensors and strings inside)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import torch

from ldm.fileio import atomic_path


def _save(tensors: Mapping[str, torch.Tensor], path: Path, tmp: Path, metadata: Mapping[str, str] | None) -> None:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(dict(tensors), str(tmp), metadata=dict(metadata or {}))
    else:
        torch.save(dict(tensors), tmp)


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` atomically (`metadata` goes into a safetensors header only)."""
    with atomic_path(path) as tmp:
        _save(tensors, path, tmp, metadata)


def save_tensor_files(
    files: Mapping[Path, Mapping[str, torch.Tensor]], metadata: Mapping[str, str] | None = None
) -> None:
    """Write several files that belong together: every one is written to its temp file first, and only when
    all succeeded are they renamed into place, so a failure leaves none of them (not half of a pair)."""
    with ExitStack() as stack:
        temps = {path: stack.enter_context(atomic_path(path)) for path in files}
        for path, tensors in files.items():
            _save(tensors, path, temps[path], metadata)
