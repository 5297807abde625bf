"""SDXL's size conditioning inputs: original size, crop top-left and target size as [B, 2] tensors.

Pairs are (height, width) and (top, left), in pixels, as sgm and diffusers order them. Each input is one
(h, w) pair for the whole batch, one pair per prompt, or a tensor [2] / [B, 2]. Defaults follow how SDXL
is used at inference: the target is the size being generated, the original size is the target, and the
crop is (0, 0) (an uncropped image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ldm.errors import ConfigError

DEFAULT_SDXL_SIZE = (1024, 1024)  # SDXL base's training size, for callers that do not say what they generate
SizeInput = torch.Tensor | Sequence[Any] | None


def size_pairs(name: str, value: SizeInput, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """One size input as a float tensor [batch, 2]; a ConfigError naming `name` for anything else."""
    t = value.detach().float() if isinstance(value, torch.Tensor) else None
    if t is None:
        try:
            t = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError):
            t = None
    if t is not None and t.dim() == 1 and t.shape[0] == 2:
        t = t.expand(batch, 2)
    if t is None or tuple(t.shape) != (batch, 2) or not torch.isfinite(t).all() or (t < 0).any():
        raise ConfigError(
            f"{name} {value!r}: give one (height, width) pair for all {batch} prompt(s) or one pair per "
            "prompt, non-negative pixels, e.g. (1024, 1024)"
        )
    return t.to(device)


def size_inputs(
    batch: int,
    original_size: SizeInput = None,
    crop_top_left: SizeInput = None,
    target_size: SizeInput = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(original_size, crop_top_left, target_size) as [batch, 2] tensors, the defaults filled in."""
    target = size_pairs("target_size", DEFAULT_SDXL_SIZE if target_size is None else target_size, batch, device)
    original = target if original_size is None else size_pairs("original_size", original_size, batch, device)
    crop = (0, 0) if crop_top_left is None else crop_top_left
    return original, size_pairs("crop_top_left", crop, batch, device), target
