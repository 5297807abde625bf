"""Save now, and save on SIGTERM: a snapshot `embeddings_gs-N`, the latest embedding and `last.ckpt`.

"Save now" is a request file, `<run>/save-now.request`, looked for after every step and removed once the
snapshot is written (a file, not a signal: a signal that arrives while the model still loads would kill
the run). SIGTERM (the UI's Stop, `kill`, a cluster's preemption) makes Lightning stop after the current
step; this callback writes the same three files first, so a stopped run resumes with `-r` losing nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ldm.callbacks.embedding_snapshot import EmbeddingSnapshot
from ldm.callbacks.resume_checkpoint import ResumeCheckpoint

log = logging.getLogger(__name__)

SAVE_REQUEST = "save-now.request"


class SaveOnRequest(pl.Callback):
    def __init__(self, logdir: str, snapshot: EmbeddingSnapshot, resume: ResumeCheckpoint):
        self.request = Path(logdir) / SAVE_REQUEST
        self.snapshot, self.resume = snapshot, resume
        self._saved_step: int | None = None  # the step a SIGTERM save was written at

    def save_all(self, trainer: pl.Trainer, pl_module: pl.LightningModule, why: str) -> None:
        log.info("%s: saving a snapshot and last.ckpt at step %d", why, trainer.global_step)
        self.snapshot.save(trainer, pl_module, with_step=True)
        self.resume._save(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.received_sigterm and self._saved_step is None:  # at the step boundary every save uses
            self.save_all(trainer, pl_module, "stop requested (SIGTERM)")
            self._saved_step = trainer.global_step
        elif self.request.exists():
            self.save_all(trainer, pl_module, f"save requested ({self.request.name})")
            self.request.unlink(missing_ok=True)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """SIGTERM that arrived after this step's callbacks: save before Lightning exits."""
        if not isinstance(exception, SIGTERMException):
            return
        if self._saved_step != trainer.global_step:
            self.save_all(trainer, pl_module, "stopped (SIGTERM)")
        log.warning("stopped at step %d; resume with: python main.py -r %s", trainer.global_step, self.request.parent)
