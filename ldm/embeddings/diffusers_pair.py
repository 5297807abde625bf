"""diffusers' SDXL embedding pair: `learned_embeds.safetensors` {token: [n, 768]} (text_encoder) beside
`learned_embeds_2.safetensors` {token: [n, 1280]} (text_encoder_2), as written by diffusers'
examples/textual_inversion/textual_inversion_sdxl.py (snapshots: `learned_embeds-steps-N` and
`learned_embeds_2-steps-N`; `.bin` without safetensors). Its loader takes them in two calls.

The rule: the pair is recognised by these names only. Either file, or the folder holding them, reads as
ONE term per token (the halves joined as an SDXL term, source = the first file); the first file without
its `_2` sibling reads as an ordinary one-encoder diffusers file (what the SD 1.x/2.x example writes);
the `_2` file without the first is refused (half an SDXL term would be silently wrong). An embeddings
folder lists the pair once, under the first file. Writing the pair takes a folder or a first-file name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ldm.embeddings.loaded import DIFFUSERS, EmbeddingFileError, LoadedEmbedding
from ldm.embeddings.sdxl import CLIP_G, CLIP_L, join_halves, split_halves

FIRST, SECOND = "learned_embeds", "learned_embeds_2"
SUFFIXES = (".safetensors", ".bin")
_NAME = re.compile(r"^learned_embeds(?P<second>_2)?(?P<tail>-steps-\d+)?(?P<suffix>\.safetensors|\.bin)$")


def pair_of(path: Path) -> tuple[Path, Path] | None:
    """(first, second) file paths when `path` is named as either half of the pair, else None."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    tail, suffix = m.group("tail") or "", m.group("suffix")
    return path.with_name(f"{FIRST}{tail}{suffix}"), path.with_name(f"{SECOND}{tail}{suffix}")


def is_second(path: Path) -> bool:
    m = _NAME.match(path.name)
    return m is not None and m.group("second") is not None


def complete_pair(path: Path) -> tuple[Path, Path] | None:
    """(first, second) when `path` is a half of a pair whose two files both exist; a lone second half is
    an error; anything else (the first file alone, another name) is None."""
    pair = pair_of(path)
    if pair is None:
        return None
    first, second = pair
    if first.is_file() and second.is_file():
        return pair
    if path == second:
        raise EmbeddingFileError(
            f"{path} is the text_encoder_2 (clip_g) half of diffusers' SDXL embedding pair, but its first "
            f"half {first.name} is not beside it; put both files in one folder and pass either"
        )
    return None


def folder_file(folder: Path) -> Path | None:
    """The first file of the pair (or a lone learned_embeds file) inside a diffusers output folder."""
    for suffix in SUFFIXES:
        candidate = folder / f"{FIRST}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def join_pair(first_obj: Any, second_obj: Any, first: Path, second: Path) -> list[LoadedEmbedding]:
    """The terms of a pair: each token's halves joined along the width (clip_l, then clip_g)."""
    where = f"{first} + {second.name}"
    for obj, path in ((first_obj, first), (second_obj, second)):
        if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise EmbeddingFileError(
                f"{path} is not a diffusers embedding ({{token: tensor}}), so {where} is not diffusers' SDXL pair"
            )
    if list(first_obj) != list(second_obj):
        raise EmbeddingFileError(
            f"{where}: the files name different tokens ({', '.join(map(repr, first_obj))} vs "
            f"{', '.join(map(repr, second_obj))}); use the two files one training run wrote"
        )
    terms = []
    for token in first_obj:
        halves = {CLIP_L: first_obj[token], CLIP_G: second_obj[token]}
        vectors, widths = join_halves(halves, where, labels=(f"{first.name}[{token}]", f"{second.name}[{token}]"))
        terms.append(
            LoadedEmbedding(str(token), vectors, token=str(token), source=first, format=DIFFUSERS, part_widths=widths)
        )
    return terms


def write_target(path: Path) -> tuple[Path, Path] | None:
    """Where the pair is written for OUT `path`: into a folder (an existing one, or a path without a
    suffix) as learned_embeds.safetensors + learned_embeds_2.safetensors, or beside a first-file name
    (learned_embeds[-steps-N].safetensors/.bin). None for any other name."""
    if path.is_dir() or (not path.suffix and not path.exists()):
        return path / f"{FIRST}.safetensors", path / f"{SECOND}.safetensors"
    pair = pair_of(path)
    if pair is None or is_second(path):
        return None
    return pair


def pair_tensors(terms: Sequence[LoadedEmbedding], where: str) -> tuple[dict, dict]:
    """({token: clip_l [n, a]}, {token: clip_g [n, b]}) for the two files; tokens are the terms' names."""
    first, second = {}, {}
    for term in terms:
        halves = split_halves(term, where)
        first[term.name], second[term.name] = halves[CLIP_L], halves[CLIP_G]
    return first, second
