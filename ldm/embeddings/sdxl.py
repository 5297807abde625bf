"""SDXL terms: one term for two text encoders, stored as `clip_l` [n, 768] and `clip_g` [n, 1280].

In memory an SDXL term is ONE `LoadedEmbedding` whose vectors are cat(clip_l, clip_g) along the width, in
the context's order ([n, 2048]), with `part_widths` (768, 1280) saying where they split. Files keep the
halves apart: A1111, ComfyUI, InvokeAI and kohya write `{"clip_l": ..., "clip_g": ...}` (tensors only:
A1111 detaches every value of the dict, so no other keys); diffusers' SDXL example writes a pair of
files (diffusers_pair.py). Small models of the same shape (the toy XL world, test models) have narrower
halves; a file whose halves include a real SDXL width must have exactly (768, 1280), so a `clip_g` of
another width is refused by name rather than read as a small model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ldm.embeddings.loaded import EmbeddingFileError, LoadedEmbedding, as_vectors

CLIP_L, CLIP_G = "clip_l", "clip_g"
SDXL_KEYS = (CLIP_L, CLIP_G)
SDXL_WIDTHS = (768, 1280)  # CLIP ViT-L, OpenCLIP ViT-bigG
SDXL_WIDTH = sum(SDXL_WIDTHS)
PART_NAMES = {CLIP_L: "CLIP ViT-L", CLIP_G: "OpenCLIP ViT-bigG"}
# Older diffusers pivotal-tuning scripts (train_dreambooth_lora_sdxl_advanced.py) keyed the halves by encoder.
OTHER_KEYS = ("text_encoders_0", "text_encoders_1")


def sdxl_keys(obj: Any) -> tuple[str, str] | None:
    """The keys holding an SDXL dict's (CLIP-L, bigG) halves, or None for another kind of dict."""
    if not isinstance(obj, Mapping):
        return None
    for keys in (SDXL_KEYS, OTHER_KEYS):
        if all(k in obj for k in keys):
            return keys
    return None


def is_sdxl_dict(obj: Any) -> bool:
    return sdxl_keys(obj) is not None


def split_of(term: LoadedEmbedding) -> tuple[int, int] | None:
    """(clip_l width, clip_g width) of an SDXL term, else None. A 2048-wide term without part widths (made
    in memory) splits as real SDXL does."""
    widths = term.part_widths
    if widths is None:
        return SDXL_WIDTHS if term.dim == SDXL_WIDTH else None
    if len(widths) != 2:
        raise EmbeddingFileError(
            f"embedding {term.name!r} has {len(widths)} parts {widths}; an SDXL term has two (clip_l, clip_g)"
        )
    return int(widths[0]), int(widths[1])


def join_halves(
    halves: Mapping[str, Any], where: str, labels: Sequence[str] = SDXL_KEYS
) -> tuple[torch.Tensor, tuple[int, int]]:
    """`halves` {"clip_l": [n, a], "clip_g": [n, b]} -> (cat along the width [n, a + b], (a, b)), after
    checking that both hold the same number of vectors and, when either has a real SDXL width, that both
    have theirs. `labels` name the halves in messages (the keys, or the two files of diffusers' pair)."""
    parts = [as_vectors(halves[key], where, label) for key, label in zip(SDXL_KEYS, labels)]
    counts = [int(p.shape[0]) for p in parts]
    if counts[0] != counts[1]:
        raise EmbeddingFileError(
            f"{where}: {labels[0]!r} has {counts[0]} vector(s) but {labels[1]!r} has {counts[1]}; "
            "an SDXL term has as many clip_l as clip_g vectors, the file is broken"
        )
    widths = (int(parts[0].shape[1]), int(parts[1].shape[1]))
    if set(widths) & set(SDXL_WIDTHS) and widths != SDXL_WIDTHS:
        i = 0 if widths[0] != SDXL_WIDTHS[0] else 1
        key = SDXL_KEYS[i]
        raise EmbeddingFileError(
            f"{where}: {labels[i]!r} is {widths[i]} wide, but an SDXL embedding's {key} "
            f"({PART_NAMES[key]}) is {SDXL_WIDTHS[i]} wide; the file is broken or not an SDXL embedding"
        )
    return torch.cat(parts, dim=1), widths


def split_halves(term: LoadedEmbedding, where: str) -> dict[str, torch.Tensor]:
    """{"clip_l": [n, a], "clip_g": [n, b]} of an SDXL term: plain contiguous float32 CPU copies."""
    split = split_of(term)
    if split is None:
        raise EmbeddingFileError(f"{where}: {not_sdxl(term)}")
    vectors = term.vectors.detach().to(device="cpu", dtype=torch.float32)
    return {
        CLIP_L: vectors[:, : split[0]].contiguous().clone(),
        CLIP_G: vectors[:, split[0] :].contiguous().clone(),
    }


def not_sdxl(term: LoadedEmbedding) -> str:
    """Why a one-encoder term cannot be written as clip_l/clip_g (the clause after the file name)."""
    from ldm.embeddings.families import width_and_family

    return (
        f"embedding {term.name!r} is {width_and_family(term.dim)}, not an SDXL term (clip_l + clip_g); "
        "write it as paper (.pt), emb_params (.safetensors), diffusers (.bin) or a1111-png (.png)"
    )


def sdxl_term(obj: Mapping[str, Any], where: str, name: str, **fields: Any) -> LoadedEmbedding:
    """The one term of a {"clip_l", "clip_g"} dict (other keys are ignored: some tools add metadata)."""
    keys = sdxl_keys(obj) or SDXL_KEYS
    vectors, widths = join_halves({CLIP_L: obj[keys[0]], CLIP_G: obj[keys[1]]}, where, labels=keys)
    return LoadedEmbedding(name, vectors, part_widths=widths, **fields)
