"""Our side of the benchmark: the real training objective and the real sampling path."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ldm.benchmark.weights import FINETUNE_CONFIG
from ldm.training.attach import attach_objective
from ldm.training.config import TrainingConfig, network_dtype

N_IMAGES = 5  # a typical concept folder: after each (image, flip) was seen once, latents come from the cache


def load_training_model(
    ckpt: str,
    precision: str,
    gradient_checkpointing: bool = False,
    channels_last: bool = False,
    config_path: str | Path = FINETUNE_CONFIG,
) -> torch.nn.Module:
    from ldm.model_loading import load_model_from_config

    config = OmegaConf.load(config_path)
    # as main.py loads it: straight into the frozen networks' precision
    model = load_model_from_config(config, ckpt, dtype=network_dtype(precision), with_embedding_manager=True)
    attach_objective(
        model,
        TrainingConfig(
            network_precision=precision, gradient_checkpointing=gradient_checkpointing, channels_last=channels_last
        ),
    )
    return model


class OurTrainer:
    def __init__(self, model: torch.nn.Module, resolution: int, batch_size: int):
        self.model = model
        self.objective = model.objective  # attached by load_training_model
        self.objective.prepare_networks()
        self.model.embedding_manager.train()
        self.optimizer = self.objective.configure_optimizers(5e-3, 10_000)["optimizer"]
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(N_IMAGES, 3, resolution, resolution, generator=g) * 2 - 1
        self.batch_size = batch_size
        self.k = 0

    def batch(self) -> dict:
        idx = [(self.k + i) % N_IMAGES for i in range(self.batch_size)]
        flips = [((self.k + i) // N_IMAGES) % 2 for i in range(self.batch_size)]
        images = torch.stack([self.images[i].flip(-1) if f else self.images[i] for i, f in zip(idx, flips)])
        batch = {
            "image": images,
            "caption": ["a photo of a *"] * self.batch_size,
            "k": torch.tensor([self.k + i for i in range(self.batch_size)]),
            "image_index": torch.tensor(idx),
            "flip": torch.tensor(flips),
        }
        self.k += self.batch_size
        return batch

    def step(self) -> float:
        loss, _ = self.objective(self.batch())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def warm_cache(self) -> None:
        """Visit every (image, flip) once, as the first epoch of a real run does."""
        while self.k < 2 * N_IMAGES:
            self.step()
