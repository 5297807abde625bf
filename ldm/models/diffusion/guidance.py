"""Classifier-free guidance: D = D(uncond) + scale * (D(cond) - D(uncond)), both halves in one batch."""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _match_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Long prompts are encoded in 77-token chunks; repeat the shorter context's chunks so both batch."""
    if a.shape[1] == b.shape[1]:
        return a, b
    short, long_ = (a, b) if a.shape[1] < b.shape[1] else (b, a)
    reps = -(-long_.shape[1] // short.shape[1])
    short = short.repeat(1, reps, 1)[:, : long_.shape[1]]
    return (short, long_) if a.shape[1] < b.shape[1] else (long_, short)


class CFGDenoiser:
    """Wraps a denoiser D(x, sigma, cond); extra_args are `cond`, `uncond`, `cond_scale`."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        cond_scale: float = 1.0,
    ) -> torch.Tensor:
        if uncond is None or cond_scale == 1.0:
            return self.denoiser(x, sigma, cond)  # scale 1 is exactly the conditional prediction
        uncond, cond = _match_length(uncond.expand(cond.shape[0], -1, -1), cond)
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([uncond, cond]))
        d_uncond, d_cond = both.chunk(2)
        return d_uncond + (d_cond - d_uncond) * cond_scale
