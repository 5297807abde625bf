"""The textual-inversion objective: MSE against the training target (the noise for eps models, v for v
models), optional min-SNR-gamma and alpha-mask weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldm.models.diffusion.parameterization import check_parameterization


def min_snr_weights(
    alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, parameterization: str = "eps"
) -> torch.Tensor:
    """Hang et al. 2023: w_t = min(SNR_t, gamma) / SNR_t for eps-prediction. A v target's MSE is (SNR_t + 1)
    times the x0 MSE where eps's is SNR_t times, so v divides by SNR_t + 1 (as diffusers' train_text_to_image
    and kohya do)."""
    ac = alphas_cumprod[t].float()
    snr = ac / (1 - ac)
    denominator = snr + 1 if check_parameterization(parameterization) == "v" else snr
    return torch.clamp(snr, max=gamma) / denominator


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    min_snr_gamma: float | None = None,
    mask: torch.Tensor | None = None,
    parameterization: str = "eps",
) -> torch.Tensor:
    """Mean over the batch of the (weighted) per-sample MSE between the UNet output and its target."""
    err = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if mask is not None:  # alpha channel as a per-pixel weight, resized to latent resolution
        m = F.interpolate(mask.float(), size=err.shape[-2:], mode="area")
        per_sample = (err * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * err.shape[1]).clamp_min(1e-8)
    else:
        per_sample = err.mean(dim=(1, 2, 3))
    if min_snr_gamma:
        weights = min_snr_weights(alphas_cumprod, t, min_snr_gamma, parameterization)
        per_sample = per_sample * weights.to(per_sample.device)
    return per_sample.mean()
