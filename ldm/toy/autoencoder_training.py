"""Stage 1 of the toy base model: train the tiny AutoencoderKL, then fold the latent scale into it."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ldm.toy.pool import ScenePool

log = logging.getLogger(__name__)
# SD's VAE weighs KL at 1e-6 against a per-image *sum* of L1; per pixel that is ~1e-6 / (3*32*32); we go lower still.
KL_WEIGHT = 1e-10
INITIAL_LOGVAR = -8.0


def train_autoencoder(
    vae: nn.Module, pool: ScenePool, steps: int, batch_size: int, lr: float, generator: torch.Generator
) -> list[float]:
    """Reconstruction (L1 + MSE) with a whisper of KL, Adam with a cosine decay. Returns the losses."""
    vae.train()
    for p in vae.parameters():
        p.requires_grad_(True)
    with torch.no_grad():  # start with a small posterior std: unit noise on fresh latents drowns the signal
        c = vae.quant_conv.out_channels // 2
        vae.quant_conv.bias[c:] = INITIAL_LOGVAR
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = pool.float_images(torch.randint(len(pool), (batch_size,), generator=generator))
        posterior = vae.encode(x)
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        rec = vae.decode(z)
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + KL_WEIGHT * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("autoencoder step %d/%d loss %.4f", step + 1, steps, losses[-1])
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return losses


@torch.no_grad()
def latent_std(vae: nn.Module, pool: ScenePool, batch_size: int = 64) -> float:
    means = [
        vae.encode(pool.float_images(torch.arange(i, min(i + batch_size, len(pool))))).mean
        for i in range(0, len(pool), batch_size)
    ]
    return float(torch.cat(means).std())


@torch.no_grad()
def fold_latent_scale(vae: nn.Module, scale: float) -> None:
    """Make the encoder emit `scale` times its latents and the decoder expect them, exactly.

    SD keeps a separate scale_factor (0.18215); folding it into quant_conv / post_quant_conv instead
    lets the toy config say scale_factor: 1.0 with no magic number tied to one training run.
    """
    q, pq = vae.quant_conv, vae.post_quant_conv
    c = q.out_channels // 2  # the moments are [mean, logvar]
    q.weight[:c] *= scale
    q.bias[:c] *= scale
    q.bias[c:] += 2.0 * math.log(scale)  # std scales by `scale`, so logvar shifts by 2 log(scale)
    pq.weight /= scale  # post_quant_conv is a 1x1 conv: W z = (W / s)(s z)
