"""The textual-inversion objective: noise-prediction MSE, optional min-SNR-gamma and alpha-mask weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Hang et al. 2023 for eps-prediction: w_t = min(SNR_t, gamma) / SNR_t."""
    ac = alphas_cumprod[t].float()
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(
    eps_pred: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    min_snr_gamma: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of the (weighted) per-sample MSE between predicted and true noise."""
    err = F.mse_loss(eps_pred.float(), eps.float(), reduction="none")
    if mask is not None:  # alpha channel as a per-pixel weight, resized to latent resolution
        m = F.interpolate(mask.float(), size=err.shape[-2:], mode="area")
        per_sample = (err * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * err.shape[1]).clamp_min(1e-8)
    else:
        per_sample = err.mean(dim=(1, 2, 3))
    if min_snr_gamma:
        per_sample = per_sample * min_snr_weights(alphas_cumprod, t, min_snr_gamma).to(per_sample.device)
    return per_sample.mean()
