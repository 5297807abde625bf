"""The transforms diffusers' textual-inversion examples use, for PIL images and tensors, drawing from torch's
global generator as torchvision does, so a seeded run flips and crops the same images."""

from __future__ import annotations

import torch
from PIL import Image

from . import functional


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


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


class CenterCrop(torch.nn.Module):
    """The middle `size` of an image at least that large (torchvision also pads smaller ones)."""

    def __init__(self, size):
        super().__init__()
        self.size = _pair(size)

    def forward(self, img):
        h, w = functional.get_dimensions(img)
        th, tw = self.size
        if h < th or w < tw:
            raise ValueError(f"stand-in CenterCrop: image {h}x{w} is smaller than {th}x{tw}")
        return functional.crop(img, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0)), th, tw)


class RandomCrop(torch.nn.Module):
    """A random `size` window; no padding options (the examples pass none)."""

    def __init__(self, size):
        super().__init__()
        self.size = _pair(size)

    @staticmethod
    def get_params(img, output_size) -> tuple[int, int, int, int]:
        """(top, left, height, width), drawn as torchvision draws it: nothing drawn when the sizes match."""
        h, w = functional.get_dimensions(img)
        th, tw = output_size
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size {(h, w)}")
        if w == tw and h == th:
            return 0, 0, h, w
        i = torch.randint(0, h - th + 1, size=(1,)).item()
        j = torch.randint(0, w - tw + 1, size=(1,)).item()
        return i, j, th, tw

    def forward(self, img):
        return functional.crop(img, *self.get_params(img, self.size))
