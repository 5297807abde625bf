"""Writing SDXL terms (sdxl.py): which format a path gets, and the files themselves.

Default by OUT: a folder (existing, or a path without a suffix) or a `learned_embeds[-steps-N]`
`.safetensors`/`.bin` name -> diffusers' pair; `.png` -> a1111-png; `.safetensors` (and the pickle
suffixes `.pt`/`.ckpt`/`.pth`/`.bin`) -> sdxl, {"clip_l", "clip_g"}. paper and emb_params hold one text
encoder's vectors, so an SDXL term is never written in them. sdxl and a1111-png hold one term (A1111,
ComfyUI and kohya read one); the pair holds one per token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ldm.embeddings import diffusers_pair, png
from ldm.embeddings.loaded import A1111_PNG, DIFFUSERS, EMB_PARAMS, FORMATS, PAPER, SDXL, LoadedEmbedding
from ldm.embeddings.sdxl import split_halves
from ldm.embeddings.tensor_files import save_tensor_files, save_tensors
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".pth", ".bin")
SDXL_CHOICES = (
    "sdxl (.safetensors/.pt: clip_l + clip_g), a1111-png (.png) or diffusers "
    "(a folder or learned_embeds.safetensors: the learned_embeds + learned_embeds_2 pair)"
)


def choose_sdxl_format(path: Path, format: str | None, count: int) -> str:
    """The format an SDXL term is written in at `path` (see the module docstring), or a one-line error."""
    suffix = path.suffix.lower()
    pair = diffusers_pair.write_target(path)
    if format is None:
        if pair is not None:
            format = DIFFUSERS
        elif suffix == ".png":
            format = A1111_PNG
        elif suffix in FILE_SUFFIXES:
            format = SDXL
        else:
            shown = repr(suffix) if suffix else "no suffix"
            raise ConfigError(f"embedding path {path} has {shown}; an SDXL embedding is written as {SDXL_CHOICES}")
    elif format in (PAPER, EMB_PARAMS):
        raise ConfigError(
            f"embedding path {path}: format {format} holds one text encoder's vectors, not an SDXL term's "
            f"clip_l + clip_g; use {SDXL_CHOICES}"
        )
    elif format not in FORMATS:
        raise ConfigError(f"embedding format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    if format == DIFFUSERS and pair is None:
        raise ConfigError(
            f"embedding path {path}: diffusers' SDXL embedding is two files, learned_embeds.safetensors + "
            "learned_embeds_2.safetensors; pass a folder or a path named learned_embeds.safetensors (or .bin)"
        )
    if format == SDXL and suffix not in FILE_SUFFIXES:
        raise ConfigError(f"embedding path {path}: format sdxl needs a {'/'.join(FILE_SUFFIXES)} file name")
    if format == A1111_PNG and suffix != ".png":
        raise ConfigError(f"embedding path {path}: format a1111-png needs a .png file name")
    if format in (SDXL, A1111_PNG) and count != 1:
        raise ConfigError(
            f"embedding path {path}: an SDXL {format} file holds one term (A1111, ComfyUI and kohya read one), "
            f"got {count}; write one file per term, or diffusers' pair (a folder) for several"
        )
    return format


def _metadata(term: LoadedEmbedding) -> dict[str, str]:
    values = {"name": term.name, "token": term.token, "step": term.step, "sd_checkpoint_name": term.checkpoint}
    return {k: str(v) for k, v in values.items() if v is not None}


def write_sdxl(path: Path, terms: Sequence[LoadedEmbedding], format: str, preview: Image.Image | None) -> Path:
    """Write SDXL `terms` in `format` (from choose_sdxl_format); returns the path that reads them back."""
    where = f"embedding path {path}"
    if format == DIFFUSERS:
        first, second = diffusers_pair.write_target(path)
        first_tensors, second_tensors = diffusers_pair.pair_tensors(terms, where)
        save_tensor_files({first: first_tensors, second: second_tensors}, {"format": "pt"})
        log.info("wrote %d SDXL term(s) to %s + %s (diffusers pair)", len(terms), first, second.name)
        return first
    (term,) = terms
    halves = split_halves(term, where)
    if format == A1111_PNG:
        image = preview if preview is not None else png.preview_card(term.name, term.vectors)
        png.write_png(path, halves, image)  # only the two tensors: A1111 detaches every value it finds
    else:
        # Pickles hold only the two tensors too (A1111 again); safetensors keep name/step as metadata.
        save_tensors(halves, path, _metadata(term))
    log.info("wrote SDXL term %r to %s (%s)", term.name, path, format)
    return path
