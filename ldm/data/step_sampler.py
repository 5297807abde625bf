"""Batches of global sample indices by step number: resumable, and split across DDP ranks without a
DistributedSampler. Batch b of rank r holds samples (b * world_size + r) * batch_size + j."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from ldm.errors import ConfigError


def batch_indices(b: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The sample indices of batch `b` on `rank`: ranks interleave, so together they cover the stream once."""
    first = (b * world_size + rank) * batch_size
    return list(range(first, first + batch_size))


class StepBatchSampler(Sampler[list[int]]):
    """Yields batches start_batch, start_batch + 1, ... endlessly, or `num_batches` of them.

    The endless form has no length (len() raises TypeError), which Lightning reads as an infinite
    loader: the run is bounded by max_steps and never restarts the stream at an epoch boundary.
    """

    def __init__(
        self,
        batch_size: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_batches: int | None = None,
    ):
        if int(batch_size) <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        if int(world_size) <= 0 or not 0 <= int(rank) < int(world_size):
            raise ConfigError(f"rank {rank} does not fit world_size {world_size}; need 0 <= rank < world_size")
        if int(start_batch) < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}")
        if num_batches is not None and int(num_batches) < 0:
            raise ConfigError(f"num_batches must be >= 0, got {num_batches}")
        self.batch_size, self.start_batch = int(batch_size), int(start_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_batches = None if num_batches is None else int(num_batches)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start_batch
        while self.num_batches is None or b < self.start_batch + self.num_batches:
            yield batch_indices(b, self.batch_size, self.rank, self.world_size)
            b += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("StepBatchSampler without num_batches is endless")
        return self.num_batches
