"""A fixed pool of rendered toy-world scenes with their labels and tokenized captions.

Rendering and tokenizing once up front keeps the training steps pure tensor work on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ldm.data.toy_world import ToyWorldDataset


@dataclass
class ScenePool:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: dict[str, torch.Tensor]  # "shape" / "colour" / "background" -> long [N]
    captions: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self, index: torch.Tensor) -> torch.Tensor:
        """The images at `index` as float [-1, 1], the autoencoder's range."""
        return self.images[index].float() / 127.5 - 1.0


def render_pool(n: int, size: int, seed: int, plain_p: float = 0.0, generic_p: float = 0.0) -> ScenePool:
    data = ToyWorldDataset(size=size, length=n, seed=seed, plain_p=plain_p, generic_p=generic_p)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    labels = {key: torch.empty(n, dtype=torch.long) for key in ("shape", "colour", "background")}
    captions = []
    for k in range(n):
        item = data[k]
        images[k] = ((item["image"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        for key in labels:
            labels[key][k] = item[key]
        captions.append(item["caption"])
    return ScenePool(images, labels, captions)


def concat_pools(*pools: ScenePool) -> ScenePool:
    return ScenePool(
        torch.cat([p.images for p in pools]),
        {k: torch.cat([p.labels[k] for p in pools]) for k in pools[0].labels},
        [c for p in pools for c in p.captions],
    )


@torch.no_grad()
def round_trip_pool(pool: ScenePool, round_trip, batch_size: int = 64) -> ScenePool:
    """The same scenes passed through `round_trip` (images in [-1, 1] -> images in [-1, 1])."""
    out = torch.empty_like(pool.images)
    for i in range(0, len(pool), batch_size):
        x = round_trip(pool.float_images(torch.arange(i, min(i + batch_size, len(pool)))))
        out[i : i + x.shape[0]] = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return ScenePool(out, pool.labels, pool.captions)
