"""A training progress bar that counts the run's batches up to max_steps, across resumes.

Lightning's default reads "Epoch 0/-2 60/39" here: the loader is endless (max_epochs=-1) and, after a
resume, the total is the steps left while the count continues from the restored batch.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE, RichProgressBar

DESCRIPTION = "train"


class _WholeRun:
    """Mixin: the total is the run's last batch (max_steps x accumulate), the count the batch index + 1."""

    trainer: object

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps < 0:
            return float("inf")
        return trainer.max_steps * trainer.accumulate_grad_batches


class RichStepProgressBar(_WholeRun, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        return DESCRIPTION


class TQDMStepProgressBar(_WholeRun, TQDMProgressBar):
    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(DESCRIPTION)


def step_progress_bar() -> ProgressBar:
    """The bar Lightning would pick (rich when installed), counting the whole run."""
    return RichStepProgressBar() if _RICH_AVAILABLE else TQDMStepProgressBar()
