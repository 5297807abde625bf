"""Turn a folder of raw photos into square training images (the logic of scripts/preprocess.py).

Crops: "center" (the centre square), "focus" (the square window with the most edge energy: where the
detail is), "none" (no crop: the shorter side is scaled to `size`, the aspect ratio kept).
Images much longer than wide (aspect > `split_aspect`) can instead be cut into overlapping square tiles.
Every input is decoded and checked before the first file is written, so bad input writes nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ldm.data.captions import filename_words, read_sidecar
from ldm.data.images import list_image_files, load_image
from ldm.data.transforms import center_square_box
from ldm.errors import ConfigError
from ldm.fileio import atomic_path, save_png

log = logging.getLogger(__name__)

CROPS = ("center", "focus", "none")
_FOCUS_SIDE = 256  # edge energy is measured on a copy this large (longer side)
_MIN_TILE_OVERLAP = 0.2


@dataclass(frozen=True)
class PreprocessOptions:
    size: int = 512
    crop: str = "center"
    flip: bool = False
    split_oversized: bool = False
    split_aspect: float = 1.5
    caption_from_filename: bool = False
    min_size: int = 0
    filename_regex: str | None = None

    def validate(self) -> None:
        if int(self.size) <= 0:
            raise ConfigError(f"--size must be a positive number of pixels, got {self.size}")
        if self.crop not in CROPS:
            raise ConfigError(f"--crop {self.crop!r} is unknown; choose one of: {', '.join(CROPS)}")
        if int(self.min_size) < 0:
            raise ConfigError(f"--min_size must be >= 0, got {self.min_size}")
        if float(self.split_aspect) <= 1.0:
            raise ConfigError(f"split aspect must be > 1, got {self.split_aspect}")


def edge_energy(image: Image.Image) -> np.ndarray:
    """Gradient magnitude of a grayscale copy whose longer side is at most _FOCUS_SIDE pixels."""
    small = image.convert("L")
    scale = min(1.0, _FOCUS_SIDE / max(small.size))
    if scale < 1.0:
        small = small.resize(
            (max(1, round(small.width * scale)), max(1, round(small.height * scale))), Image.Resampling.BILINEAR
        )
    a = np.asarray(small, dtype=np.float32)
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:] = np.abs(np.diff(a, axis=1))
    gy[1:, :] = np.abs(np.diff(a, axis=0))
    return np.hypot(gx, gy)


def focus_square_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The square (side = shorter side) that holds the most edge energy; ties go to the centre."""
    w, h = image.size
    side = min(w, h)
    if w == h:
        return 0, 0, w, h
    energy = edge_energy(image)
    horizontal = w > h
    profile = energy.sum(axis=0 if horizontal else 1).astype(np.float64)  # energy per column (or row)
    n = profile.shape[0]
    window = max(1, round(n * side / max(w, h)))
    sums = np.convolve(profile, np.ones(window), mode="valid")  # energy of every window position
    centre = (len(sums) - 1) / 2
    # Tiny centre prior: a flat image (all scores equal) keeps the centre crop.
    score = sums - 1e-6 * (np.abs(np.arange(len(sums)) - centre) + 1) * (sums.max() + 1)
    best = int(np.argmax(score))
    offset = round(best * (max(w, h) - side) / max(1, len(sums) - 1)) if len(sums) > 1 else 0
    return (offset, 0, offset + side, side) if horizontal else (0, offset, side, offset + side)


def tile_boxes(width: int, height: int, min_overlap: float = _MIN_TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Evenly spaced square tiles covering a long image along its long side, overlapping >= min_overlap."""
    side, long = min(width, height), max(width, height)
    count = max(2, math.ceil((long - side) / (side * (1 - min_overlap))) + 1)
    offsets = [round(i * (long - side) / (count - 1)) for i in range(count)]
    if width >= height:
        return [(o, 0, o + side, side) for o in offsets]
    return [(0, o, side, o + side) for o in offsets]


def crops_of(image: Image.Image, options: PreprocessOptions) -> list[Image.Image]:
    """The output images (before flipping) of one upright RGB(A) image."""
    w, h = image.size
    size = int(options.size)
    if options.split_oversized and max(w, h) / min(w, h) > options.split_aspect:
        return [image.crop(box).resize((size, size), Image.Resampling.LANCZOS) for box in tile_boxes(w, h)]
    if options.crop == "none":
        scale = size / min(w, h)
        return [image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)]
    box = focus_square_box(image) if options.crop == "focus" else center_square_box(w, h)
    return [image.crop(box).resize((size, size), Image.Resampling.LANCZOS)]


def _unique_stem(stem: str, taken: set[str]) -> str:
    name, n = stem, 2
    while name.lower() in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name.lower())
    return name


def _outputs(stem: str, crops: list[Image.Image], flip: bool) -> Iterator[tuple[str, Image.Image]]:
    for j, crop in enumerate(crops):
        name = stem if len(crops) == 1 else f"{stem}-tile{j}"
        yield name, crop
        if flip:
            yield f"{name}-flipped", ImageOps.mirror(crop)


def preprocess_folder(src: str | Path, dst: str | Path, options: PreprocessOptions) -> list[Path]:
    """Write the square training images of `src` into `dst` as PNG (+ .txt captions); returns the PNGs."""
    options.validate()
    src, dst = Path(src), Path(dst)
    files = list_image_files(src, what="--src")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"--dst {dst} is the --src folder; write the results to another folder")
    keep = []
    for path in files:  # pass 1: decode all, so a corrupt file stops us before anything is written
        rgb, _ = load_image(path)
        if min(rgb.size) < int(options.min_size):
            log.warning("skipping %s: %dx%d is smaller than --min_size %d", path.name, *rgb.size, options.min_size)
            continue
        keep.append(path)
    if not keep:
        raise ConfigError(f"--src {src}: every image is smaller than --min_size {options.min_size}; lower it")
    written, taken = [], set()
    for path in keep:  # pass 2: one image in memory at a time
        rgb, alpha = load_image(path)
        image = rgb if alpha is None else Image.merge("RGBA", (*rgb.split(), alpha))  # keep the mask
        caption = read_sidecar(path)
        if caption is None and options.caption_from_filename:
            caption = filename_words(path, options.filename_regex)
        for name, out in _outputs(_unique_stem(path.stem, taken), crops_of(image, options), options.flip):
            written.append(save_png(out, dst / f"{name}.png"))
            if caption is not None:
                with atomic_path(dst / f"{name}.txt") as tmp:
                    tmp.write_text(caption + "\n", encoding="utf-8")
    log.info("wrote %d images from %d inputs to %s", len(written), len(keep), dst)
    return written
