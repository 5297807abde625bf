"""`crop` for PIL images and tensors, as torchvision.transforms.functional.crop (inside the image)."""

from __future__ import annotations

import torch


def crop(img, top: int, left: int, height: int, width: int):
    if isinstance(img, torch.Tensor):
        return img[..., top : top + height, left : left + width]
    return img.crop((left, top, left + width, top + height))


def get_dimensions(img) -> tuple[int, int]:
    """(height, width) of a PIL image or a [..., H, W] tensor."""
    if isinstance(img, torch.Tensor):
        return img.shape[-2], img.shape[-1]
    return img.height, img.width
