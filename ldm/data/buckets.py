"""Aspect-ratio buckets (kohya-style): a fixed list of (height, width) sizes of about `resolution`^2 pixels,
sides in steps of `step` between `min_side` and `max_side`. Each image goes to the bucket whose aspect ratio
is nearest its own, is resized to cover it and centre-cropped, so a portrait photo trains as a portrait
instead of being squeezed or cropped square. The crop is recorded as SDXL's size conditioning wants it:
(top, left) of the crop in the resized image, in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldm.errors import ConfigError

# Image sides must survive the VAE's 8x downsampling (the UNet's own multiple is the config's concern).
PIXEL_MULTIPLE = 8


@dataclass(frozen=True)
class BucketSpec:
    resolution: int  # the square side; buckets hold at most resolution^2 pixels
    step: int = 64
    min_side: int = 512
    max_side: int = 2048

    def __post_init__(self) -> None:
        if self.step <= 0 or self.step % PIXEL_MULTIPLE:
            raise ConfigError(f"bucket_step {self.step} must be a positive multiple of {PIXEL_MULTIPLE}, e.g. 64")
        for name, side in (("min_bucket", self.min_side), ("max_bucket", self.max_side)):
            if side <= 0 or side % self.step:
                raise ConfigError(f"{name} {side} must be a positive multiple of bucket_step {self.step}")
        if not self.min_side <= self.resolution <= self.max_side:
            raise ConfigError(
                f"size {self.resolution} must lie between min_bucket {self.min_side} and max_bucket "
                f"{self.max_side}; change size or the bucket limits"
            )


def make_buckets(spec: BucketSpec) -> list[tuple[int, int]]:
    """Every (height, width) bucket, sorted: the square one, and for each width from min to max the tallest
    height (a multiple of step, within the limits) whose area stays within resolution^2, and its transpose."""
    area = spec.resolution * spec.resolution
    square = spec.resolution // spec.step * spec.step
    sizes = {(square, square)}
    for width in range(spec.min_side, spec.max_side + 1, spec.step):
        height = min(spec.max_side, area // width // spec.step * spec.step)
        if height >= spec.min_side:
            sizes.update({(height, width), (width, height)})
    return sorted(sizes)


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose width/height ratio is nearest the image's (ties: the first in sorted order)."""
    aspect = width / height
    return min(buckets, key=lambda hw: abs(hw[1] / hw[0] - aspect))


@dataclass(frozen=True)
class CoverCrop:
    """How an image of `original` (h, w) becomes `target` (h, w): resized to `resized` (h, w), which covers the
    target, then cropped at `top_left` (top, left) in the resized image."""

    original: tuple[int, int]
    resized: tuple[int, int]
    top_left: tuple[int, int]
    target: tuple[int, int]

    def flipped(self) -> CoverCrop:
        """The same crop seen in the mirrored image: its left edge is measured from the other side."""
        left = self.resized[1] - self.target[1] - self.top_left[1]
        return CoverCrop(self.original, self.resized, (self.top_left[0], left), self.target)


def cover_crop(height: int, width: int, target: tuple[int, int]) -> CoverCrop:
    """Scale so the image covers `target` (the larger of the two ratios, rounded as kohya rounds), then take
    the centred target-sized window."""
    th, tw = target
    scale = max(th / height, tw / width)
    rh, rw = max(th, int(height * scale + 0.5)), max(tw, int(width * scale + 0.5))
    return CoverCrop((height, width), (rh, rw), ((rh - th) // 2, (rw - tw) // 2), (th, tw))


def square_geometry(height: int, width: int, size: int, center_crop: bool) -> CoverCrop:
    """The square path's geometry: the centred square scaled to size (crop in the resized image's pixels), or
    the whole image squeezed to size x size (nothing cropped)."""
    if not center_crop:
        return CoverCrop((height, width), (size, size), (0, 0), (size, size))
    return cover_crop(height, width, (size, size))
