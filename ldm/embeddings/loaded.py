"""The neutral in-memory form of one learned term, whatever file format it came from or goes to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldm.errors import CheckpointError

# The four formats of DESIGN.md "Embedding files"; LoadedEmbedding.format holds one of these.
PAPER = "paper"  # paper / InvokeAI / A1111 .pt: {"string_to_token", "string_to_param", "name", ...}
EMB_PARAMS = "emb_params"  # A1111 / kohya .safetensors: {"emb_params": [n, dim]} + string metadata
DIFFUSERS = "diffusers"  # learned_embeds.{bin,safetensors}: {"<token>": [dim] or [n, dim]}
A1111_PNG = "a1111-png"  # PNG with a tEXt chunk "sd-ti-embedding" = base64(JSON of the paper dict)
SDXL = "sdxl"  # A1111 / ComfyUI / InvokeAI / kohya SDXL file: {"clip_l": [n, 768], "clip_g": [n, 1280]}
FORMATS = (PAPER, EMB_PARAMS, DIFFUSERS, A1111_PNG, SDXL)


class EmbeddingFileError(CheckpointError):
    """An embedding file that cannot be read, written, or does not fit the model."""


@dataclass
class LoadedEmbedding:
    """One term: `vectors` [n, dim] float32 on CPU. `token` is the placeholder string the file keys the
    vectors by (e.g. "*"), when the format has one; `name` is what users call the term.

    A term for several text encoders (SDXL) holds their vectors side by side in context order,
    [n, 768 + 1280] = cat(clip_l, clip_g), and `part_widths` says where they split ((768, 1280)); it is
    None for a one-encoder term (SD 1.x/2.x)."""

    name: str
    vectors: torch.Tensor
    token: str | None = None
    step: int | None = None
    checkpoint: str | None = None
    source: Path | None = None
    format: str = PAPER
    part_widths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.part_widths is not None:
            self.part_widths = tuple(int(w) for w in self.part_widths)
            if sum(self.part_widths) != self.vectors.shape[-1]:
                raise ValueError(f"part_widths {self.part_widths} do not add up to the width {self.vectors.shape[-1]}")

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def as_vectors(value: Any, where: str, key: str) -> torch.Tensor:
    """A tensor from a file -> [n, dim] float32 contiguous CPU copy; one-line error naming the file if not."""
    if not isinstance(value, torch.Tensor):
        raise EmbeddingFileError(
            f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor; is it an embedding file?"
        )
    if not value.is_floating_point():
        raise EmbeddingFileError(f"{where}: entry {key!r} has dtype {value.dtype}, embeddings are float vectors")
    if value.dim() == 1:  # diffusers stores a single vector as [dim]
        value = value[None]
    if value.dim() != 2:
        raise EmbeddingFileError(
            f"{where}: entry {key!r} has shape {tuple(value.shape)}; an embedding is [dim] or [n_vectors, dim]"
        )
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise EmbeddingFileError(f"{where}: entry {key!r} has shape {tuple(value.shape)}, which holds no vectors")
    # float16/bfloat16 -> float32 is exact; detach drops a Parameter's autograd identity.
    vectors = value.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
    check_finite(vectors, where, key)
    return vectors


def check_finite(vectors: torch.Tensor, where: str, key: str) -> None:
    """Refuse NaN/inf vectors: in a prompt they make black images, in training a NaN first step."""
    bad = int((~torch.isfinite(vectors)).sum())
    if bad:
        raise EmbeddingFileError(
            f"{where}: entry {key!r} has {bad} NaN/inf value(s) of {vectors.numel()}; "
            "the embedding is broken, use an earlier snapshot or re-train it"
        )


def check_same_width(terms: list[LoadedEmbedding], where: str) -> None:
    widths = {(t.dim, t.part_widths) for t in terms}
    if len(widths) > 1:
        detail = ", ".join(f"{t.name!r}: {t.dim}" + (f" {t.part_widths}" if t.part_widths else "") for t in terms)
        raise EmbeddingFileError(
            f"{where}: its terms have different widths ({detail}); one file must hold embeddings for one text encoder"
        )
