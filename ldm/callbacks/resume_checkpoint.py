"""Small resumable `last.ckpt` (vectors, optimizer, scheduler, loop state) every N steps and at the end."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl

from ldm.callbacks.embedding_snapshot import embedding_file_name

log = logging.getLogger(__name__)


class ResumeCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 500):
        self.path = Path(dirpath) / "last.ckpt"
        self.every = int(every_n_steps)
        self._last = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._last:
            self._last = trainer.global_step
            trainer.save_checkpoint(self.path)  # collective; rank 0 writes through AtomicCheckpointIO

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Ctrl-C keeps what was learned: a resumable checkpoint and the current embedding."""
        if isinstance(exception, KeyboardInterrupt):
            manager = pl_module.embedding_manager
            latest = embedding_file_name(manager)  # embeddings.pt, or embeddings.safetensors for SDXL
            log.warning("interrupted at step %d; saving last.ckpt and %s", trainer.global_step, latest)
            self._save(trainer)
            if trainer.global_rank == 0:
                manager.save(self.path.parent / latest, step=trainer.global_step)
