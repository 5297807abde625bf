"""Square crops, bucket cover-crops and resizes shared by the datasets and the preprocessing tool."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ldm.data.buckets import CoverCrop
from ldm.errors import ConfigError
from ldm.image_utils import pil_to_tensor

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resolve_interpolation(name: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"interpolation {name!r} is unknown; choose one of: {', '.join(INTERPOLATIONS)}") from None


def center_square_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def square_resize(image: Image.Image, size: int, center_crop: bool, resample: Image.Resampling) -> Image.Image:
    """size x size: the centre square when `center_crop`, else the whole image squeezed to a square."""
    if center_crop:
        image = image.crop(center_square_box(*image.size))
    return image.resize((size, size), resample=resample)


def cover_resize(image: Image.Image, crop: CoverCrop, resample: Image.Resampling) -> Image.Image:
    """Resize to `crop.resized` (covering the target) and cut out the target window at `crop.top_left`."""
    (rh, rw), (top, left), (th, tw) = crop.resized, crop.top_left, crop.target
    return image.resize((rw, rh), resample=resample).crop((left, top, left + tw, top + th))


def image_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> FloatTensor [3, H, W] in [-1, 1]."""
    return pil_to_tensor(image)[0].contiguous()


def mask_tensor(mask: Image.Image | None, size: int | tuple[int, int]) -> torch.Tensor:
    """ "L" mask -> FloatTensor [1, H, W] in [0, 1]; None -> ones of `size` (side, or (h, w)): fully weighted."""
    if mask is None:
        return torch.ones(1, *((size, size) if isinstance(size, int) else size))
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None].contiguous()
