"""Lightning checkpoint IO that writes atomically and reads through the safe loader."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ldm.fileio import atomic_path
from ldm.safe_load import safe_torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """A SIGKILL mid-save leaves the previous checkpoint intact: temp file, then rename."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        checkpoint = safe_torch_load(path)
        if map_location is not None:
            checkpoint = _move(checkpoint, map_location)
        return checkpoint


def _move(obj: Any, device: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device) if not callable(device) else obj
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_move(v, device) for v in obj]
    return obj
