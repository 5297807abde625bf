"""Create the run directory and store the merged configs (rank 0 only)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import OmegaConf

from ldm.fileio import atomic_path

log = logging.getLogger(__name__)


class SetupCallback(pl.Callback):
    def __init__(self, logdir: str, now: str, config, lightning_config):
        self.logdir, self.now = Path(logdir), now
        self.config, self.lightning_config = config, lightning_config

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        for sub in ("checkpoints", "configs", "images/train"):
            (self.logdir / sub).mkdir(parents=True, exist_ok=True)
        for name, cfg in (
            ("project", self.config),
            ("lightning", OmegaConf.create({"lightning": self.lightning_config})),
        ):
            with atomic_path(self.logdir / "configs" / f"{self.now}-{name}.yaml") as tmp:
                tmp.write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
        log.info("run directory: %s", self.logdir)
