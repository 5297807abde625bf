"""Whole-file operations on embedding files: convert between formats, merge several files into one.

Both read with `read_embedding_file` (any format, detected from the bytes) and write with
`write_embedding_file` (atomic), so vectors pass through bit-exactly as float32. What a target format
cannot hold is dropped by that format, not by us: diffusers files keep no step, emb_params files take
their name from the file name, and an A1111 `.pt`/`.png` holds one term.

SDXL terms (clip_l + clip_g) convert between the SDXL layouts only (sdxl_files.py): a clip_l/clip_g
`.safetensors`/`.pt`, an A1111 `.png`, and diffusers' learned_embeds + learned_embeds_2 pair (format
diffusers; OUT a folder or a learned_embeds.safetensors name). Several SDXL terms merge into that pair.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ldm.embeddings import diffusers_pair
from ldm.embeddings.families import width_and_family
from ldm.embeddings.formats import embedding_source, read_embedding_file, write_embedding_file
from ldm.embeddings.loaded import A1111_PNG, DIFFUSERS, EMB_PARAMS, FORMATS, PAPER, SDXL, LoadedEmbedding
from ldm.embeddings.sdxl import not_sdxl, split_of
from ldm.embeddings.sdxl_files import choose_sdxl_format
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

PathLike = str | Path

# What each writable suffix means (for .safetensors: emb_params for one term, diffusers for several).
SUFFIX_FORMATS: dict[str, tuple[str, ...]] = {
    ".pt": (PAPER, DIFFUSERS),
    ".ckpt": (PAPER, DIFFUSERS),
    ".pth": (PAPER, DIFFUSERS),
    ".bin": (DIFFUSERS, PAPER),
    ".safetensors": (EMB_PARAMS, DIFFUSERS),
    ".png": (A1111_PNG,),
}
SUFFIX_CHOICES = (
    ".pt/.ckpt/.pth (paper), .safetensors (emb_params; diffusers for several terms), .bin (diffusers), .png (a1111-png)"
)
MERGE_FORMATS = {".pt": PAPER, ".ckpt": PAPER, ".pth": PAPER, ".bin": DIFFUSERS, ".safetensors": DIFFUSERS}


@dataclasses.dataclass(frozen=True)
class Rename:
    """A term that `merge_embeddings` renamed because an earlier file already used its name."""

    old: str
    new: str
    source: Path


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output_suffix(path: PathLike, what: str = "OUT") -> str:
    """The lower-case suffix of `path` if some format writes it; otherwise a one-line error listing them.
    A folder (or a path without a suffix) passes too: diffusers' SDXL pair is written into one."""
    suffix = Path(path).suffix.lower()
    if diffusers_pair.write_target(Path(path)) is not None:
        return suffix
    if suffix not in SUFFIX_FORMATS:
        shown = repr(suffix) if suffix else "no suffix"
        raise ConfigError(f"{what} {path} has {shown}, which matches no embedding format; use {SUFFIX_CHOICES}")
    return suffix


def output_format(
    path: PathLike, count: int, format: str | None = None, what: str = "OUT", first: LoadedEmbedding | None = None
) -> str:
    """The format `path` will be written in: `format` if given (checked against the suffix), else the
    suffix's default for `count` terms. `first`: a term to be written (an SDXL one has its own formats)."""
    if first is not None and split_of(first) is not None:
        return choose_sdxl_format(Path(path), format, count)
    if format == SDXL:
        why = not_sdxl(first) if first is not None else "the terms are not SDXL terms"
        raise ConfigError(f"{what} {path}: format sdxl is clip_l + clip_g; {why}")
    suffix = check_output_suffix(path, what)
    if not suffix:
        raise ConfigError(
            f"{what} {path} is a folder or has no suffix; only diffusers' SDXL pair is written into a folder, "
            f"use {SUFFIX_CHOICES}"
        )
    if format is None:
        if suffix == ".safetensors":
            return EMB_PARAMS if count == 1 else DIFFUSERS
        format = SUFFIX_FORMATS[suffix][0]
    elif format not in FORMATS:
        raise ConfigError(f"format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    elif format not in SUFFIX_FORMATS[suffix]:
        fits = sorted(s for s, formats in SUFFIX_FORMATS.items() if format in formats)
        raise ConfigError(
            f"{what} {path}: format {format} is not written to a {suffix} file; name it {' or '.join(fits)}"
        )
    if format in (EMB_PARAMS, A1111_PNG) and count != 1:
        raise ConfigError(
            f"{what} {path}: format {format} holds one term but there are {count}; "
            "write one file per term or use paper/diffusers"
        )
    return format


def _read_preview(path: PathLike) -> Image.Image:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"preview image {path} not found; pass an existing .png/.jpg")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"preview image {path} cannot be read ({type(exc).__name__}); pass a .png/.jpg") from None


def _files_of(path: Path) -> list[Path]:
    """The files an input path reads: diffusers' SDXL pair is two."""
    source = embedding_source(path)
    pair = diffusers_pair.complete_pair(source)
    return list(pair) if pair is not None else [source]


def _check_not_input(src: Path, dst: Path, fmt: str, first: LoadedEmbedding) -> None:
    """Writing diffusers' pair into a folder must not replace the pair being read."""
    if fmt != DIFFUSERS or split_of(first) is None:
        return
    inputs = _files_of(src)
    for out in diffusers_pair.write_target(dst) or ():
        if any(_same_file(out, p) for p in inputs):
            raise ConfigError(f"OUT {dst} would overwrite the input {out}; write the converted pair to another folder")


def convert_embedding(
    src: PathLike,
    dst: PathLike,
    format: str | None = None,
    name: str | None = None,
    preview: PathLike | None = None,
) -> tuple[Path, str, list[LoadedEmbedding]]:
    """Read `src` (any format) and write its terms to `dst` in `format` (default: from dst's suffix).
    `name` renames a single-term file; `preview` is the picture of an a1111-png file (default: the
    source's own picture when it is a PNG embedding, else a generated card). Returns (dst, format, terms)."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    check_output_suffix(dst)  # before reading: a bad OUT should not wait on a big IN
    if _same_file(src, dst):
        raise ConfigError(f"OUT {dst} is the input file; write the converted embedding to another path")
    terms = read_embedding_file(src)
    fmt = output_format(dst, len(terms), format, first=terms[0])
    _check_not_input(src, dst, fmt, terms[0])
    if name is not None:
        name = name.strip()
        if not name:
            raise ConfigError("--name is empty; give the term a name such as 'my-cat'")
        if len(terms) != 1:
            raise ConfigError(
                f"--name renames one term but {src} holds {len(terms)} "
                f"({', '.join(t.name for t in terms)}); convert without --name"
            )
        terms = [dataclasses.replace(terms[0], name=name)]
    image = None
    if preview is not None:
        if fmt != A1111_PNG:
            raise ConfigError(f"--preview is the picture of an a1111-png embedding; OUT {dst} is written as {fmt}")
        image = _read_preview(preview)
    elif fmt == A1111_PNG and terms[0].format == A1111_PNG:
        image = _read_preview(src)  # keep the picture the source file carries
    dst = write_embedding_file(dst, terms, format=fmt, preview=image)  # the pair: its first file
    log.info("converted %s (%s) -> %s (%s)", src, terms[0].format, dst, fmt)
    return dst, fmt, terms


def _key(name: str) -> str:
    # CLIP lower-cases prompts, so "Cat" and "cat" would be the same word to the model.
    return name.strip().lower()


def merge_embeddings(sources: Sequence[PathLike], rename: bool = False) -> tuple[list[LoadedEmbedding], list[Rename]]:
    """Every term of every source, in order, each keyed by its name (token := name). A name used twice
    (case-insensitively, as CLIP reads prompts) is an error naming both files, unless `rename`: then the
    later term becomes `name-2`, `name-3`, ... (the first free one) and a `Rename` records it."""
    paths = [Path(p).expanduser() for p in sources]
    loaded = [(path, read_embedding_file(path)) for path in paths]  # read all first: fail before any work
    taken = {_key(t.name) for _, terms in loaded for t in terms}
    owner: dict[str, Path] = {}
    merged: list[LoadedEmbedding] = []
    renames: list[Rename] = []
    for path, terms in loaded:
        for term in terms:
            name = term.name
            if _key(name) in owner:
                if not rename:
                    first = owner[_key(name)]
                    raise ConfigError(
                        f"term {name!r} is in both {first} and {path}; rename one "
                        "(convert_embedding.py --name) or pass --rename"
                    )
                k = 2
                while _key(f"{name}-{k}") in taken:
                    k += 1
                new = f"{name}-{k}"
                taken.add(_key(new))
                renames.append(Rename(name, new, path))
                name = new
            owner[_key(name)] = path
            merged.append(dataclasses.replace(term, name=name, token=name))
    widths = {t.dim for t in merged}
    if len(widths) > 1:
        detail = "; ".join(f"{p.name}: {width_and_family(terms[0].dim)}" for p, terms in loaded)
        raise ConfigError(
            f"the files hold embeddings of different widths ({detail}); merge only embeddings made for one text encoder"
        )
    return merged, renames


def merge_embedding_files(
    out: PathLike, sources: Sequence[PathLike], rename: bool = False
) -> tuple[Path, str, list[LoadedEmbedding], list[Rename]]:
    """Merge `sources` into `out`: a multi-term paper `.pt` or a diffusers `.bin`/`.safetensors`."""
    out = Path(out).expanduser()
    suffix = out.suffix.lower()
    pair = diffusers_pair.write_target(out)
    if suffix not in MERGE_FORMATS and pair is None:
        raise ConfigError(
            f"OUT {out}: a merged file holds several terms, so it must be .pt/.ckpt/.pth (paper) "
            "or .bin/.safetensors (diffusers)"
        )
    if len(sources) < 2:
        raise ConfigError(
            f"merge needs at least two input files, got {len(sources)}; "
            "use convert_embedding.py to change one file's format"
        )
    for src in sources:
        if _same_file(Path(src).expanduser(), out):
            raise ConfigError(f"OUT {out} is also an input; write the merged embedding to a new path")
    terms, renames = merge_embeddings(sources, rename=rename)
    if split_of(terms[0]) is not None:  # SDXL: one term per file, except diffusers' pair
        if pair is None:
            raise ConfigError(
                f"OUT {out}: an SDXL clip_l/clip_g file holds one term (A1111, ComfyUI, kohya); merge SDXL "
                "embeddings into diffusers' pair: OUT a folder or learned_embeds.safetensors"
            )
        fmt = DIFFUSERS
    elif pair is not None and suffix not in MERGE_FORMATS:
        raise ConfigError(f"OUT {out} is a folder; a merged file must be .pt/.ckpt/.pth (paper) or .bin/.safetensors")
    else:
        fmt = MERGE_FORMATS[suffix]
    for src in sources:
        _check_not_input(Path(src).expanduser(), out, fmt, terms[0])
    out = write_embedding_file(out, terms, format=fmt)
    return out, fmt, terms, renames
