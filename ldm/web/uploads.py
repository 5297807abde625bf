"""Uploaded files are untrusted bytes: read them with a size cap, and turn images into fresh PIL images
(verified, decoded, EXIF-rotated) so nothing of the original file but its pixels is ever kept."""

from __future__ import annotations

import io
import warnings

from fastapi import UploadFile
from PIL import Image, ImageOps, UnidentifiedImageError

from ldm.web.body_limit import size_text
from ldm.web.security import WebInputError

CHUNK = 1 << 20
DEFAULT_MAX_PIXELS = 8192 * 8192


def upload_name(upload: UploadFile) -> str:
    """The client's file name, for messages only (never a path on this machine)."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name[:120] or "the file"


async def read_upload(upload: UploadFile, limit: int, what: str) -> bytes:
    """The upload's bytes; stops at the first chunk past `limit` bytes (HTTP 413 naming the file)."""
    chunks, total = [], 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise WebInputError(
                f"{what} {upload_name(upload)!r} is larger than {size_text(limit)}; send a smaller file", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


def reencode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A new RGB (or RGBA) image holding only the pixels of `data`, upright per its EXIF orientation.

    Refused with one line naming the file: not an image, a truncated or corrupt one, or more than
    `max_pixels` pixels (checked from the header, before anything is decoded: decompression bombs).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                _check_pixels(probe, name, max_pixels)
                probe.verify()  # structure and checksums; the image is unusable afterwards
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
                pixels = upright.convert("RGBA" if has_alpha else "RGB")
                return Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())  # no info/EXIF/ICC carried over
    except WebInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = "is too large to decode safely" if "decompression" in type(exc).__name__.lower() else None
        raise WebInputError(f"{name!r} {reason or 'is not an image'}; upload a PNG, JPEG or WebP photo") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL's ways of saying "corrupt"
        raise WebInputError(f"{name!r} is a damaged image ({_short(exc)}); upload the original file again") from None


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise WebInputError(
            f"{name!r} is {width}x{height} pixels, more than {max_pixels} in all; scale it down before uploading"
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]
