"""The order of samples when images are bucketed: every batch holds images of ONE bucket.

The step sampler hands batch b of rank r the samples (b * world_size + r) * batch_size + j, so each run of
batch_size consecutive sample indices (a "group") is exactly one batch, on whichever rank. The dataset maps
sample k to an image through this plan: group k // batch_size of epoch e draws from one bucket. An epoch
shuffles each bucket's images, cuts them into groups (the last one of a bucket filled up with images of the
same bucket), and shuffles the groups. Everything is a pure function of (seed, k): resumable, DDP-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from ldm.data.sample_rng import sample_rng

BUCKET_ORDER, GROUP_ORDER = 4, 5  # streams beside those of sample_rng's ORDER/FLIP/CAPTION


class BucketOrder:
    def __init__(self, image_buckets: Sequence[tuple[int, int]], batch_size: int):
        """`image_buckets[i]` is image i's bucket; groups of `batch_size` samples share one bucket."""
        self.batch_size = int(batch_size)
        members: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(image_buckets):
            members.setdefault(tuple(bucket), []).append(index)
        self.members = tuple(tuple(members[b]) for b in sorted(members))  # image indices per bucket
        self.groups_per_epoch = sum(-(-len(m) // self.batch_size) for m in self.members)
        self._last: tuple[tuple[int, int], tuple[tuple[int, ...], ...]] | None = None  # samples come in order

    def image_index(self, seed: int, k: int) -> int:
        group, position = divmod(int(k), self.batch_size)
        epoch, slot = divmod(group, self.groups_per_epoch)
        return self._epoch(int(seed), epoch)[slot][position]

    def _epoch(self, seed: int, epoch: int) -> tuple[tuple[int, ...], ...]:
        if self._last is None or self._last[0] != (seed, epoch):
            self._last = ((seed, epoch), _epoch_groups(seed, epoch, self.batch_size, self.members))
        return self._last[1]


def _epoch_groups(
    seed: int, epoch: int, batch_size: int, members: tuple[tuple[int, ...], ...]
) -> tuple[tuple[int, ...], ...]:
    groups = []
    for b, images in enumerate(members):
        rng = sample_rng(seed, epoch * len(members) + b, BUCKET_ORDER)
        order = [images[i] for i in rng.permutation(len(images))]
        padded = -(-len(order) // batch_size) * batch_size
        order = [order[i % len(order)] for i in range(padded)]  # top up the last group from the same bucket
        groups += [tuple(order[i : i + batch_size]) for i in range(0, padded, batch_size)]
    shuffle = sample_rng(seed, epoch, GROUP_ORDER).permutation(len(groups))
    return tuple(groups[i] for i in shuffle)
