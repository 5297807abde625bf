"""Sample grids during training: images/train/{inputs,samples,samples_scaled,conditioning}_gs-N.png."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ldm.fileio import save_png
from ldm.image_utils import make_grid, tensor_to_pil
from ldm.training.log_images import log_images

log = logging.getLogger(__name__)


class ImageLogger(pl.Callback):
    """Paper config keys: batch_frequency, max_images, increase_log_steps, clamp, log_images_kwargs."""

    def __init__(
        self,
        batch_frequency: int = 500,
        max_images: int = 8,
        clamp: bool = True,
        increase_log_steps: bool = False,
        log_images_kwargs: dict | None = None,
        disabled: bool = False,
        logdir: str | None = None,
        **ignored: Any,
    ):
        self.every = int(batch_frequency)
        self.max_images = int(max_images)
        self.clamp = clamp
        # Early steps are where users look first: log at 1, 2, 4, ... before the regular cadence.
        self.log_steps = [2**n for n in range(self.every.bit_length())] if increase_log_steps else []
        self.kwargs = dict(log_images_kwargs or {})
        self.disabled = disabled
        self.logdir = Path(logdir) if logdir else None
        self._last = -1

    def _due(self, step: int) -> bool:
        return step != self._last and step > 0 and (step % self.every == 0 or step in self.log_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.disabled or trainer.global_rank != 0 or not self._due(step):
            return
        self._last = step
        folder = (self.logdir or Path(trainer.default_root_dir)) / "images" / "train"
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                images = log_images(pl_module, batch, self.max_images, **self.kwargs)
        finally:
            pl_module.train(was_training)
        for key, value in images.items():
            value = value[: self.max_images].float().cpu()
            if self.clamp:
                value = value.clamp(-1, 1)
            grid = make_grid(tensor_to_pil(value), nrow=min(4, len(value)))
            save_png(grid, folder / f"{key}_gs-{step:06}_e-{trainer.current_epoch:06}_b-{batch_idx:06}.png")
