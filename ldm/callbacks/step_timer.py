"""Each training step's wall time in the metrics CSV (`time/step_s`), the loop's period as a user sees it.

The time is from the end of the previous optimizer step to the end of this one: data, forward, backward
(of every accumulated batch), the optimizer and every callback of the step. A1111 and kohya show the same
figure as it/s; the benchmark reads it to time steps inside one process, free of start-up and loading.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl

STEP_TIME = "time/step_s"


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self._last: float | None = None
        self._step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last, self._step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._step:  # inside gradient accumulation: the step is not over yet
            return
        now = time.perf_counter()
        if self._last is not None:
            pl_module.log(STEP_TIME, now - self._last, on_step=True, on_epoch=False, logger=True, batch_size=1)
        self._last, self._step = now, trainer.global_step
