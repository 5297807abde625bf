"""`DataModuleFromConfig`: builds the datasets of `data.params` and serves a resumable, DDP-aware stream.

The training loader needs no DistributedSampler (the trainer passes `use_distributed_sampler=False`):
a `StepBatchSampler` hands out global sample indices by batch number, so resuming at batch b, or
running on several ranks, reads exactly the samples an uninterrupted single stream would.
The data module's `seed` is the run's seed and is given to every dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ldm.data.step_sampler import StepBatchSampler
from ldm.errors import ConfigError
from ldm.util import instantiate_from_config

log = logging.getLogger(__name__)


class DataModuleFromConfig(pl.LightningDataModule):
    def __init__(
        self,
        batch_size: int,
        train: Mapping[str, Any] | None = None,
        validation: Mapping[str, Any] | None = None,
        num_workers: int | None = 0,
        wrap: bool = False,
        seed: int = 0,
        test: Mapping[str, Any] | None = None,
        use_worker_init_fn: bool = False,
        shuffle_val_dataloader: bool = False,
        shuffle_test_loader: bool = False,
    ):
        """`wrap`, `test`, `use_worker_init_fn` and the shuffle flags are accepted so the paper's
        configs load; they change nothing here (items are deterministic, validation is ordered)."""
        super().__init__()
        if train is None:
            raise ConfigError(
                "data.params.train is missing; give a {target, params} node, e.g. "
                "target: ldm.data.personalized.PersonalizedBase"
            )
        if int(batch_size) <= 0:
            raise ConfigError(f"data.params.batch_size must be a positive integer, got {batch_size}")
        if num_workers is not None and int(num_workers) < 0:
            raise ConfigError(f"data.params.num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers or 0)
        self.seed = int(seed)
        self.dataset_configs = {"train": train, "validation": validation}
        if validation is not None:  # Lightning looks for a val loader only when the hook is overridden
            self.val_dataloader = self._val_dataloader
        if test is not None or wrap or use_worker_init_fn or shuffle_val_dataloader or shuffle_test_loader:
            log.debug("data.params: wrap/test/use_worker_init_fn/shuffle flags are accepted and ignored")
        self.datasets: dict[str, Dataset] = {}
        self.start_batch = 0
        self._distributed: tuple[int, int] | None = None

    # ---- what the trainer sets before fit --------------------------------------------------------
    def set_start_batch(self, b: int) -> None:
        """Resume: the first training batch is batch number `b` of this rank."""
        if int(b) < 0:
            raise ConfigError(f"start batch must be >= 0, got {b}")
        self.start_batch = int(b)

    def set_distributed(self, rank: int, world_size: int) -> None:
        if int(world_size) <= 0 or not 0 <= int(rank) < int(world_size):
            raise ConfigError(f"rank {rank} does not fit world_size {world_size}; need 0 <= rank < world_size")
        self._distributed = (int(rank), int(world_size))

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        for dataset in self.datasets.values():
            if hasattr(dataset, "set_seed"):
                dataset.set_seed(self.seed)

    def distributed(self) -> tuple[int, int]:
        """(rank, world_size): set_distributed, else the attached trainer, else torch.distributed."""
        if self._distributed is not None:
            return self._distributed
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    # ---- datasets -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Nothing to download: the images are local."""

    def setup(self, stage: str | None = None) -> None:
        """Build each dataset once (decoding every image, so bad files fail before training starts)."""
        for name, config in self.dataset_configs.items():
            if config is None or name in self.datasets:
                continue
            dataset = instantiate_from_config(config)
            if hasattr(dataset, "set_seed"):
                dataset.set_seed(self.seed)
            if name == "train" and hasattr(dataset, "set_batch_size"):
                dataset.set_batch_size(self.batch_size)  # bucketed data: one bucket per batch of this size
            self.datasets[name] = dataset

    def _dataset(self, name: str) -> Dataset:
        self.setup()
        if name not in self.datasets:
            raise ConfigError(f"data.params.{name} is not configured")
        return self.datasets[name]

    @property
    def train_dataset(self) -> Dataset:
        return self._dataset("train")

    @property
    def val_dataset(self) -> Dataset | None:
        return self._dataset("validation") if self.dataset_configs["validation"] is not None else None

    # ---- loaders --------------------------------------------------------------------------------
    def train_batch_sampler(self, num_batches: int | None = None) -> StepBatchSampler:
        rank, world_size = self.distributed()
        return StepBatchSampler(self.batch_size, self.start_batch, rank, world_size, num_batches)

    def train_dataloader(self, num_batches: int | None = None) -> DataLoader:
        """Endless by default (the trainer stops at max_steps); `num_batches` bounds it (tests, tools)."""
        sampler = self.train_batch_sampler(num_batches)
        log.info(
            "training data: batch %d of rank %d/%d, batch size %d",
            sampler.start_batch,
            sampler.rank,
            sampler.world_size,
            sampler.batch_size,
        )
        return DataLoader(self.train_dataset, batch_sampler=sampler, num_workers=self.num_workers)

    def _val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
