"""Device and precision choice: cuda > mps > cpu, and the dtype a precision name means there."""

from __future__ import annotations

import logging

import torch

from ldm.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "autocast", "full", "fp32", "float32", "fp16", "half", "float16", "bf16", "bfloat16")


def choose_device(requested: str | None = None) -> torch.device:
    """The requested device, or the best available one when None/'auto'."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {requested!r} is not a torch device; use cpu, cuda, cuda:1, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r}: CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {requested!r}: MPS is not available here; use --device cpu or auto")
    return device


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp32 for 'full'; 'autocast'/'auto' is fp16 on GPUs and fp32 on the CPU (bf16 is opt-in there)."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; choose one of: {', '.join(PRECISIONS)}")
    if p in ("full", "fp32", "float32"):
        return torch.float32
    if p in ("bf16", "bfloat16"):
        return torch.bfloat16
    if p in ("fp16", "half", "float16"):
        if device.type == "cpu":
            log.warning("fp16 on the CPU is slow and some ops lack kernels; bf16 is the CPU's half precision")
        return torch.float16
    return torch.float32 if device.type == "cpu" else torch.float16
