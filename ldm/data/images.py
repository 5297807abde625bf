"""Reading a folder of training images: EXIF orientation applied, RGB, transparency kept as a mask."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ldm.data.captions import read_sidecar
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class TrainingImage:
    path: Path
    rgb: Image.Image  # upright RGB; transparent pixels composited over white
    alpha: Image.Image | None  # "L" mask (255 = opaque) when the file has transparency, else None
    caption: str | None  # the sidecar `<stem>.txt` caption, if any


def list_image_files(root: str | Path, what: str = "data_root") -> list[Path]:
    """Image files directly in `root`, sorted by name; other files (.txt, .json, .DS_Store) are skipped."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{what} {root}: no such folder; pass the folder that holds your training images")
    if not root.is_dir():
        raise ConfigError(f"{what} {root} is a file, not a folder; pass the folder that holds your training images")
    files = sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ConfigError(
            f"{what} {root} has no images ({', '.join(IMAGE_EXTENSIONS)}); put 3-5 pictures of the concept there"
        )
    return files


def load_image(path: str | Path) -> tuple[Image.Image, Image.Image | None]:
    """Decode fully (a corrupt file fails here, naming it) -> (upright RGB, alpha mask or None)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"cannot read image {path} ({exc}); re-save it or remove it from the folder") from None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return img.convert("RGB"), None
    rgba = img.convert("RGBA")
    alpha = rgba.getchannel("A")
    # Hidden colour under alpha = 0 is arbitrary (often black); white is what the user saw.
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), alpha


def load_training_images(root: str | Path, what: str = "data_root") -> list[TrainingImage]:
    """Every image of `root` decoded into memory (training sets are a handful of pictures)."""
    images = []
    for path in list_image_files(root, what):
        rgb, alpha = load_image(path)
        images.append(TrainingImage(path=path, rgb=rgb, alpha=alpha, caption=read_sidecar(path)))
    log.info("loaded %d training images from %s", len(images), root)
    return images
