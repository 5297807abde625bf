"""Write the learned embedding: `embeddings_gs-N.pt` every N steps and `embeddings.pt` (latest); for SDXL
`embeddings_gs-N.safetensors` and `embeddings.safetensors` (clip_l/clip_g, the SDXL file everyone reads).
`embedding_file_name` is the one place these names are made.

Never a non-finite one: a step whose loss or vectors turn NaN/inf stops the run (TrainingDivergedError, one
line), and `embeddings.pt` then holds the vectors from before that step (the last good embedding). The loss
is not refused before the optimizer step: under DDP a NaN on one rank reaches every rank's vectors through
the gradient all-reduce, so all ranks stop at the same step instead of one waiting forever for the others.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from ldm.errors import TrainingDivergedError

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX, LATEST_STEM = "embeddings_gs-", "embeddings"


def embedding_file_name(manager, step: int | None = None) -> str:
    """`embeddings_gs-<step>` (a snapshot) or `embeddings` (the latest), with the manager's suffix:
    `.pt` for SD 1.x/2.x, `.safetensors` for SDXL."""
    stem = LATEST_STEM if step is None else f"{SNAPSHOT_PREFIX}{step}"
    return stem + getattr(manager, "file_suffix", ".pt")


class EmbeddingSnapshot(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 500, sd_checkpoint: str | None = None):
        self.dirpath, self.every = Path(dirpath), int(every_n_steps)
        self.sd_checkpoint = sd_checkpoint
        self._good: list[torch.Tensor] = []  # the vectors before the current step (a few KB)
        self._good_step = 0
        self._bad_loss = ""  # "NaN"/"inf" once a batch of the current step had a non-finite loss

    def save(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, with_step: bool, step: int | None = None
    ) -> None:
        manager = pl_module.embedding_manager
        if trainer.global_rank != 0 or not _finite(pl_module):
            return
        step = trainer.global_step if step is None else step
        if with_step:
            manager.save(self.dirpath / embedding_file_name(manager, step), step=step, checkpoint=self.sd_checkpoint)
        manager.save(self.dirpath / embedding_file_name(manager), step=step, checkpoint=self.sd_checkpoint)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._good = [p.detach().clone() for p in pl_module.embedding_manager.embedding_parameters()]
        self._good_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not self._bad_loss and not torch.isfinite(loss).all():
            self._bad_loss = "NaN" if torch.isnan(loss).any() else "inf"
        what = f"loss is {self._bad_loss}" if self._bad_loss else "the learned vectors became NaN/inf"
        # One process stops at the bad loss; DDP ranks stop together once the shared vectors show it.
        if not _finite(pl_module) or (self._bad_loss and trainer.world_size == 1):
            raise diverged(self._good_step + 1, what, embedding_file_name(pl_module.embedding_manager))
        if step != self._good_step:  # the optimizer stepped and the vectors are fine: a new step begins
            self._bad_loss = ""
        if self.every > 0 and step > 0 and step % self.every == 0 and getattr(self, "_last", None) != step:
            self._last = step
            self.save(trainer, pl_module, with_step=True)

    def on_train_end(self, trainer, pl_module) -> None:
        check_ranks_agree(trainer, pl_module)
        self.save(trainer, pl_module, with_step=False)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A diverged step: put the vectors from before it back and write them as embeddings.pt (.safetensors)."""
        if not isinstance(exception, TrainingDivergedError):
            return
        if _finite(pl_module):  # a bad loss in a batch that did not step: these are the good ones
            self.save(trainer, pl_module, with_step=False)
            return
        with torch.no_grad():
            for param, good in zip(pl_module.embedding_manager.embedding_parameters(), self._good):
                param.copy_(good)
        self.save(trainer, pl_module, with_step=False, step=self._good_step)


def _finite(pl_module: pl.LightningModule) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in pl_module.embedding_manager.embedding_parameters())


def check_ranks_agree(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Under DDP every rank must hold the same vectors; a silent divergence would make rank 0's file a lie."""
    if trainer.world_size <= 1:
        return
    vectors = torch.cat([p.detach().flatten() for p in pl_module.embedding_manager.embedding_parameters()])
    gathered = trainer.strategy.all_gather(vectors)
    spread = (gathered - gathered[0]).abs().max().item()
    if spread > 0:
        raise RuntimeError(f"DDP ranks disagree on the learned vectors (max difference {spread:.3g})")
    log.info("vectors synchronised across %d ranks", trainer.world_size)


def diverged(step: int, what: str, latest: str = "embeddings.pt") -> TrainingDivergedError:
    """The one-line error of a run stopped at `step` (1-based), naming what to change; `latest` is the file
    that holds the embedding to go on from (embedding_file_name)."""
    if step <= 1:
        return TrainingDivergedError(
            f"step {step}: {what}; {latest} holds the starting embedding; check --init_word or "
            "--embedding_manager_ckpt, or lower the learning rate (model.base_learning_rate)"
        )
    return TrainingDivergedError(
        f"step {step}: {what}; {latest} holds the last good embedding (step {step - 1}); lower the learning "
        "rate (model.base_learning_rate) and go on from it with --embedding_manager_ckpt"
    )
