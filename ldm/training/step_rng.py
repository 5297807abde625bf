"""Per-step randomness derived from (seed, step, rank): a resumed run draws what the uninterrupted one would."""

from __future__ import annotations

import hashlib

import torch


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (nearby inputs give unrelated streams)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator for one training step; `stream` separates independent uses within a step."""
    return torch.Generator("cpu").manual_seed(mix_seed(seed, step, rank, stream))
