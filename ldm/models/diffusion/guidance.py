"""Classifier-free guidance: D = D(uncond) + scale * (D(cond) - D(uncond)), both halves in one batch.

Conditioning is a context tensor [B, N, D] (SD 1.x/2.x) or the conditioner's dict: {"crossattn": context}
and, for SDXL, "vector" [B, 2816]; every part is batched the same way, cond and uncond alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

Cond = torch.Tensor | Mapping[str, torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]


def _match_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Long prompts are encoded in 77-token chunks; repeat the shorter context's chunks so both batch."""
    if a.shape[1] == b.shape[1]:
        return a, b
    short, long_ = (a, b) if a.shape[1] < b.shape[1] else (b, a)
    reps = -(-long_.shape[1] // short.shape[1])
    short = short.repeat(1, reps, 1)[:, : long_.shape[1]]
    return (short, long_) if a.shape[1] < b.shape[1] else (long_, short)


def cond_parts(cond: Cond) -> dict[str, torch.Tensor]:
    """The parts of a conditioning: {"crossattn": context} for a bare tensor."""
    return {"crossattn": cond} if isinstance(cond, torch.Tensor) else dict(cond)


def cond_device(cond: Cond) -> torch.device:
    return cond_parts(cond)["crossattn"].device


def _guided_batch(cond: Cond, uncond: Cond) -> Cond:
    """cat([uncond, cond]) part by part, uncond broadcast to cond's batch and contexts matched in length."""
    c, u = cond_parts(cond), cond_parts(uncond)
    if set(c) != set(u):
        raise ValueError(f"cond has parts {sorted(c)} but uncond has {sorted(u)}; encode both with one conditioner")
    n = c["crossattn"].shape[0]
    u = {k: v.expand(n, *v.shape[1:]) for k, v in u.items()}
    u["crossattn"], c["crossattn"] = _match_length(u["crossattn"], c["crossattn"])
    both = {k: torch.cat([u[k], c[k]]) for k in c}
    return both["crossattn"] if isinstance(cond, torch.Tensor) else both


class CFGDenoiser:
    """Wraps a denoiser D(x, sigma, cond); extra_args are `cond`, `uncond`, `cond_scale`."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Cond,
        uncond: Cond | None = None,
        cond_scale: float = 1.0,
    ) -> torch.Tensor:
        if uncond is None or cond_scale == 1.0:
            return self.denoiser(x, sigma, cond)  # scale 1 is exactly the conditional prediction
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), _guided_batch(cond, uncond))
        d_uncond, d_cond = both.chunk(2)
        return d_uncond + (d_cond - d_uncond) * cond_scale
