"""Stage 2 of the toy base model: the UNet and the text encoder(s) learn together on cached latents.

The objective is SD's: epsilon prediction under the model's own noise schedule, with a share of
unconditional captions so classifier-free guidance works at sampling time. SD 1.x and SDXL shapes
differ only in how captions become conditioning (ldm/toy/text_conditioning.py).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from ldm.toy.pool import ScenePool
from ldm.toy.text_conditioning import condition, text_module, tokenize

log = logging.getLogger(__name__)


@dataclass
class LatentPool:
    """Posterior mean and std per pooled image, after the latent scale has been folded in."""

    mean: torch.Tensor
    std: torch.Tensor
    tokens: list[torch.Tensor]  # per text encoder: [N, max_length] caption ids
    empty: list[torch.Tensor]  # per text encoder: [max_length] ids of the empty caption ""
    size: tuple[int, int]  # (height, width) of the pooled images (SDXL's size conditioning)


@torch.no_grad()
def encode_pool(model: nn.Module, pool: ScenePool, batch_size: int = 64) -> LatentPool:
    means, stds = [], []
    for i in range(0, len(pool), batch_size):
        posterior = model.encode_first_stage(pool.float_images(torch.arange(i, min(i + batch_size, len(pool)))))
        means.append(posterior.mean * model.scale_factor)
        stds.append(posterior.std * model.scale_factor)
    empty = [ids[0] for ids in tokenize(model, "")]
    size = tuple(pool.images.shape[-2:])
    return LatentPool(torch.cat(means), torch.cat(stds), tokenize(model, pool.captions), empty, size)


class EMA:
    """Exponential moving average of a module's parameters (the weights that get saved)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm start: early weights fade fast
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1.0 - decay)


@dataclass
class DiffusionSchedule:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    uncond_p: float


def _lr(schedule: DiffusionSchedule, step: int) -> float:
    if step < schedule.warmup:
        return schedule.lr * (step + 1) / schedule.warmup
    progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
    return schedule.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_text_to_image(
    model: nn.Module, latents: LatentPool, schedule: DiffusionSchedule, generator: torch.Generator
) -> dict:
    """Train model.model (UNet) and the text encoder(s) jointly; copy their EMA weights back at the end."""
    unet = model.model
    text = text_module(model)
    trainable = nn.ModuleList([unet, text])
    trainable.train()
    for p in trainable.parameters():
        p.requires_grad_(True)
    ema = EMA(trainable, schedule.ema_decay)
    opt = torch.optim.AdamW(trainable.parameters(), lr=schedule.lr, weight_decay=0.0)
    n = latents.mean.shape[0]
    losses, start = [], time.time()
    for step in range(schedule.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(schedule, step)
        idx = torch.randint(n, (schedule.batch_size,), generator=generator)
        z0 = latents.mean[idx] + latents.std[idx] * torch.randn(latents.mean[idx].shape, generator=generator)
        tokens = [ids[idx] for ids in latents.tokens]
        drop = torch.rand(schedule.batch_size, generator=generator) < schedule.uncond_p
        t = torch.randint(0, model.num_timesteps, (schedule.batch_size,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        cond = condition(model, tokens, latents.empty, drop, latents.size)
        eps = model.apply_model(model.q_sample(z0, t, noise), t, cond)
        loss = (eps - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(trainable, step)
        losses.append(loss.item())
        if step % 200 == 0 or step == schedule.steps - 1:
            recent = sum(losses[-200:]) / len(losses[-200:])
            log.info(
                "text-to-image step %d/%d loss %.4f (%.0f s)", step + 1, schedule.steps, recent, time.time() - start
            )
    trainable.load_state_dict(ema.shadow.state_dict())
    trainable.eval()
    for p in trainable.parameters():
        p.requires_grad_(False)
    return {"losses": losses, "seconds": time.time() - start}
