"""A1111's PNG embeddings: the paper dict as JSON (tensors as {"TORCHTENSOR": nested lists}), base64-encoded
in a tEXt chunk named `sd-ti-embedding`. Only the text chunk is supported, not data hidden in the pixels.

Float32 values survive exactly: a float32 widened to a Python float is written by `json` with the shortest
repr that parses back to the same double, and narrowing that double to float32 is exact.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from ldm.embeddings.loaded import EmbeddingFileError
from ldm.fileio import save_png

CHUNK_KEY = "sd-ti-embedding"
TENSOR_KEY = "TORCHTENSOR"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PathLike = str | Path


def _to_json_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {TENSOR_KEY: value.detach().to("cpu", torch.float32).tolist()}
    if isinstance(value, dict):
        return {str(k): _to_json_tree(v) for k, v in value.items()}
    return value


def _from_json_tree(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR_KEY}:
            return torch.tensor(value[TENSOR_KEY], dtype=torch.float64).to(torch.float32)
        return {k: _from_json_tree(v) for k, v in value.items()}
    return value


def encode_payload(data: dict) -> str:
    """Paper dict (or SDXL dict of two tensors) -> the base64 text A1111 stores; verified to decode to the
    very same float32 bits."""
    text = base64.b64encode(json.dumps(_to_json_tree(data)).encode("utf-8")).decode("ascii")
    back = decode_payload(text, "<encoded>")
    back = back.get("string_to_param", back)  # a paper dict, or an SDXL {"clip_l", "clip_g"} dict
    for key, tensor in data.get("string_to_param", data).items():
        if not isinstance(tensor, torch.Tensor):
            continue
        # Guard the exactness argument above: a JSON encoder change must not silently round vectors.
        if not torch.equal(back[key].view(torch.int32), tensor.to(torch.float32).contiguous().view(torch.int32)):
            raise RuntimeError(f"PNG embedding encoding of {key!r} is not bit-exact")
    return text


def decode_payload(text: str, where: str) -> dict:
    try:
        raw = base64.b64decode(text.strip(), validate=False)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmbeddingFileError(
            f"{where}: its {CHUNK_KEY} chunk is not base64 JSON ({exc}); re-export the embedding image"
        ) from None
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"{where}: its {CHUNK_KEY} chunk holds a {type(data).__name__}, not a dict")
    try:
        return _from_json_tree(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EmbeddingFileError(
            f"{where}: a {TENSOR_KEY} entry is not a rectangular list of numbers ({exc})"
        ) from None


def _png_text_chunks(blob: bytes, where: str) -> dict[str, str]:
    """Text chunks of a PNG, read directly (PIL caps text chunks at 1 MB; many-vector embeddings exceed it)."""
    if not blob.startswith(PNG_SIGNATURE):
        raise EmbeddingFileError(f"{where} is not a PNG file")
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[pos : pos + 8])
        body = blob[pos + 8 : pos + 8 + length]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            break
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                texts[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, value = rest.partition(b"\0")
                texts[key.decode("latin-1")] = (zlib.decompress(value) if compressed else value).decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue  # a damaged unrelated chunk should not hide the embedding
    return texts


def read_png_payload(path: PathLike) -> dict:
    path = Path(path)
    texts = _png_text_chunks(path.read_bytes(), str(path))
    if CHUNK_KEY not in texts:
        raise EmbeddingFileError(
            f"{path} has no '{CHUNK_KEY}' text chunk, so it is not an embedding image "
            "(embeddings hidden in the pixels are not supported)"
        )
    return decode_payload(texts[CHUNK_KEY], str(path))


def preview_card(name: str, vectors: torch.Tensor, size: int = 128) -> Image.Image:
    """A small stand-in image: a colour strip derived from the vectors, and the term's name."""
    v = vectors.detach().to(torch.float32).flatten()
    v = (v - v.min()) / (v.max() - v.min() + 1e-12)
    n = max(1, min(16, v.numel() // 3))
    colours = (v[: n * 3].reshape(n, 3) * 255).round().to(torch.uint8).tolist()
    card = Image.new("RGB", (size, size), (24, 24, 32))
    draw = ImageDraw.Draw(card)
    band = size / n
    for i, colour in enumerate(colours):
        draw.rectangle((int(i * band), size // 2, int((i + 1) * band), size), fill=tuple(colour))
    draw.text((6, 6), name[:18], fill=(235, 235, 235))
    return card


def write_png(path: PathLike, data: dict, image: Image.Image) -> Path:
    """Atomically write `image` with the embedding in its `sd-ti-embedding` tEXt chunk."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    return save_png(image, path, {CHUNK_KEY: encode_payload(data)})
