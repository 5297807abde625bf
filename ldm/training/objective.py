"""One textual-inversion step: cached latents -> noised at a seeded timestep -> UNet under the spliced
prompt -> loss. Gradients reach only the embedding manager's vectors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from ldm.models.diffusion.parameterization import training_target
from ldm.training.config import TrainingConfig, network_dtype
from ldm.training.latent_cache import LatentCache
from ldm.training.loss import diffusion_loss
from ldm.training.lr_schedule import make_schedule
from ldm.training.step_rng import step_generator

log = logging.getLogger(__name__)


# Concept folders up to this many (image, flip) pairs are encoded up front whatever the run length.
PREFILL_ALWAYS = 64

# SDXL's size inputs as the datasets name them (sgm's input keys) -> the prompt conditioner's keywords.
SIZE_KEYS = {
    "original_size_as_tuple": "original_size",
    "crop_coords_top_left": "crop_top_left",
    "target_size_as_tuple": "target_size",
}


def size_conditioning(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Each image's (h, w) before resizing, crop (top, left) and trained (h, w) [B, 2], for SDXL's vector. A
    batch without them (another dataset) trains as what it is: an uncropped image of its own size."""
    images = batch["image"]
    sizes = {arg: torch.as_tensor(batch[key]) for key, arg in SIZE_KEYS.items() if key in batch}
    if "target_size" not in sizes:
        sizes["target_size"] = torch.tensor([list(images.shape[-2:])] * images.shape[0])
    sizes.setdefault("original_size", sizes["target_size"])
    sizes.setdefault("crop_top_left", torch.zeros_like(sizes["target_size"]))
    return {arg: value.to(device) for arg, value in sizes.items()}


def latent_keys(dataset: Any) -> list[tuple[int, int]]:
    """The (image index, flip) keys a personalized dataset's batches carry; [] for other datasets. An image's
    bucket (its size) never changes within a run, so the key also fixes the latent's size."""
    if not (hasattr(dataset, "pixels") and hasattr(dataset, "num_images") and getattr(dataset, "train", False)):
        return []
    flips = (0, 1) if getattr(dataset, "flip_p", 0) > 0 else (0,)
    return [(i, f) for i in range(dataset.num_images) for f in flips]


class TextualInversionObjective:
    """Plain helper owned by LatentDiffusion (kept out of its module tree so it adds no state)."""

    def __init__(self, model: Any, config: TrainingConfig):
        self.model = model
        self.config = config
        self.latents = LatentCache(config.latent_sampling, seed=config.seed)

    def prepare_networks(self) -> None:
        m, c = self.model, self.config
        if c.network_precision != "fp32":
            m.set_network_dtype(network_dtype(c.network_precision))
            m.embedding_manager.float()  # the vectors stay fp32; they are cast at the splice
        if c.channels_last:
            m.unet.to(memory_format=torch.channels_last)
        if c.gradient_checkpointing:
            for module in m.unet.modules():
                if hasattr(module, "use_checkpoint"):
                    module.use_checkpoint = True
        if c.embedding_reg_weight is not None:
            m.embedding_manager.embedding_reg_weight = c.embedding_reg_weight
        trainable = [n for n, p in m.named_parameters() if p.requires_grad and not n.startswith("embedding_manager.")]
        if trainable:
            raise RuntimeError(f"frozen networks have trainable parameters: {trainable[:3]}")

    def prefill_latents(self, dataset: Any, samples: int) -> int:
        """Encode every (image, flip) latent before the first step, so the steps never stop for the VAE. The
        values are the lazy path's (each draw is seeded by its key); only when they are computed changes.
        Skipped for datasets larger than the run will visit; returns how many were encoded."""
        keys = latent_keys(dataset)
        if not keys or len(keys) > max(PREFILL_ALWAYS, samples // 2):
            return 0
        device = self.model.device
        n = self.latents.prefill(((key, dataset.pixels(*key)[0].to(device)) for key in keys), self._encode)
        log.info("encoded %d training latents before the first step", n)
        return n

    def _encode(self, images: torch.Tensor):
        return self.model.encode_first_stage(images)

    def __call__(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.model
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        images = batch["image"].to(m.device)
        rank = m.global_rank if m._trainer is not None else 0
        g = step_generator(self.config.seed, int(batch["k"][0]), rank)
        keys = [(int(i), int(f)) for i, f in zip(batch["image_index"], batch["flip"])]
        z = m.scale_factor * self.latents.get(keys, images, self._encode, g)
        t = torch.randint(0, m.num_timesteps, (z.shape[0],), generator=g).to(m.device)
        noise = torch.randn(z.shape, generator=g).to(m.device)
        # {"crossattn": context} with the learned words in place; SDXL adds {"vector": pooled text + sizes}.
        sizes = size_conditioning(batch, m.device) if getattr(m, "uses_vector", False) else {}
        cond = m.prompt_conditioner(list(batch["caption"]), **sizes)
        prediction = m.apply_model(m.q_sample(z, t, noise).contiguous(memory_format=fmt), t, cond)
        target = training_target(m.parameterization, z, noise, m.alphas_cumprod, t)  # the noise, or v for v models
        mask = batch.get("weight")
        mask = mask.to(m.device) if mask is not None else None
        mse = diffusion_loss(
            prediction, target, t, m.alphas_cumprod, self.config.min_snr_gamma, mask, m.parameterization
        )
        reg = m.embedding_manager.regularization_loss()
        return mse + reg, {"loss_simple": mse.detach(), "loss_reg": reg.detach()}

    def configure_optimizers(self, lr: float, max_steps: int) -> dict:
        params = self.model.embedding_manager.embedding_parameters()
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)
        c = self.config
        schedule = make_schedule(c.lr_schedule, lr, max_steps, c.lr_schedule_string, c.lr_warmup_steps, c.min_lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step) / lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
