"""`RandomHorizontalFlip` for PIL images and tensors, drawing from torch's global generator as torchvision does,
so a seeded run flips the same images."""

from __future__ import annotations

import torch
from PIL import Image


class RandomHorizontalFlip(torch.nn.Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, img):
        if torch.rand(1) < self.p:
            if isinstance(img, torch.Tensor):
                return img.flip(-1)
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"
