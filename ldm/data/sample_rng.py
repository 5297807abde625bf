"""Randomness of one training sample as a pure function of (seed, k): resuming at sample k sees what
the uninterrupted run saw, in any worker process, with no global RNG state."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Independent streams, so that adding a draw to one choice never shifts the others.
ORDER, FLIP, CAPTION = 1, 2, 3

_MASK64 = 2**64 - 1


def sample_rng(seed: int, k: int, stream: int) -> np.random.Generator:
    """A fresh generator for choice `stream` of sample `k` (negative seeds are folded to 64 bits)."""
    return np.random.default_rng([stream, int(seed) & _MASK64, int(k)])


@lru_cache(maxsize=256)
def _permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in sample_rng(seed, epoch, ORDER).permutation(n))


def epoch_permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    """The image order of epoch `epoch` (n consecutive samples): each image exactly once."""
    return _permutation(int(seed), int(epoch), int(n))
