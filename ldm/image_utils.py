"""Conversions between model tensors and PIL images, and image grids (no torchvision)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> RGB PIL images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arr]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [1, 3, H, W] in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def make_grid(images: Sequence[Image.Image], nrow: int | None = None, padding: int = 2) -> Image.Image:
    """Images side by side, `nrow` per row (default: a near-square layout)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / nrow)
    w, h = images[0].size
    grid = Image.new("RGB", (nrow * w + (nrow + 1) * padding, rows * h + (rows + 1) * padding), "black")
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        grid.paste(img, (padding + c * (w + padding), padding + r * (h + padding)))
    return grid
