"""A1111 emphasis on encoded chunks: each position's output is multiplied by its weight, then the chunk is
rescaled so its mean equals the unweighted mean. Chunks without emphasis are left untouched (bit for bit)."""

from __future__ import annotations

import torch


def apply_emphasis(z: torch.Tensor, weights: list[list[float]]) -> torch.Tensor:
    """z [chunks, positions, D]; weights[chunk][position]. Returns z itself when nothing is weighted."""
    weighted = [i for i, w in enumerate(weights) if any(x != 1.0 for x in w)]
    if not weighted:
        return z
    z = z.clone()
    for i in weighted:
        chunk = z[i].float()
        w = torch.tensor(weights[i], dtype=torch.float32, device=z.device)[:, None]
        scaled = chunk * w
        new_mean = scaled.mean()
        if new_mean.abs() > 1e-12:  # a zero mean cannot be restored by scaling; keep the weighted values
            scaled = scaled * (chunk.mean() / new_mean)
        z[i] = scaled.to(z.dtype)
    return z
