"""What the Embeddings page changes: upload into the library, convert, merge, add a run's embedding, delete.

Every file is named by an id inside the embeddings folder (or logs/ for runs); nothing is overwritten (a
taken name is refused); uploads are staged as hidden files, read through the safe readers, and only then
renamed into place, all of a batch or none; convert and merge reuse ldm/embeddings/tools.py (atomic writes).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

from fastapi import UploadFile

from ldm.embeddings import FORMATS, read_embedding_file
from ldm.embeddings.diffusers_pair import complete_pair
from ldm.embeddings.library import SUFFIXES
from ldm.embeddings.sdxl import split_of
from ldm.embeddings.tools import MERGE_FORMATS, convert_embedding, merge_embedding_files
from ldm.errors import LdmUserError
from ldm.fileio import atomic_path
from ldm.web.embedding_files import FileInfo, describe, library_path, model_widths, run_embedding
from ldm.web.security import WebInputError, check_id, child
from ldm.web.settings import WebSettings
from ldm.web.uploads import read_upload, upload_name

# The file each format is written to (SDXL terms: "sdxl" is A1111/ComfyUI's clip_l/clip_g .safetensors).
FORMAT_SUFFIX = {
    "paper": ".pt",
    "emb_params": ".safetensors",
    "diffusers": ".bin",
    "a1111-png": ".png",
    "sdxl": ".safetensors",
}
SUFFIX_LIST = ", ".join(SUFFIXES)
TERM_NAME = re.compile(r"[\w<>*-][\w<>*.-]{0,63}")  # one prompt word, e.g. <cat-toy>; no path, no spaces


def _info(settings: WebSettings, path: Path) -> FileInfo:
    return describe(path, path.name, "library", model_widths(settings))


def _new_file(settings: WebSettings, name: str, suffix: str, what: str) -> Path:
    """embeddings/<name> with `suffix` added when missing; refused when taken (nothing is overwritten)."""
    name = name.strip()
    if not name.lower().endswith(suffix):
        name += suffix
    path = child(settings.embeddings_dir, name, what=what)
    if path.exists():
        raise WebInputError(f"{what} {name!r} is already in {settings.embeddings_dir.name}/; pick another name")
    return path


async def save_uploads(settings: WebSettings, uploads: Sequence[UploadFile]) -> list[FileInfo]:
    """Add uploaded embedding files to the library: each size-capped, named by a plain new name and readable
    by the safe readers (a code-running pickle is refused, never run); all of them or none."""
    if not uploads:
        raise WebInputError("no file was sent; choose one or more .pt/.safetensors/.bin/.png embeddings")
    if len(uploads) > settings.max_upload_files:
        raise WebInputError(f"{len(uploads)} files at once is more than {settings.max_upload_files}; send fewer")
    folder = settings.embeddings_dir
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for upload in uploads:
            staged.append(await _stage(settings, upload, {target for _, target in staged}))
        for _tmp, target in staged:
            if target.exists():  # appeared meanwhile: still never overwrite
                raise WebInputError(f"{target.name!r} is already in {folder.name}/; delete it first or rename the file")
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [_info(settings, target) for _, target in staged]


async def _stage(settings: WebSettings, upload: UploadFile, taken: set[Path]) -> tuple[Path, Path]:
    name = upload_name(upload)
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise WebInputError(f"{name!r} is not an embedding file; upload one of {SUFFIX_LIST}")
    name = check_id(upload.filename or "", "file name")  # a name with a path in it is refused, not trimmed
    target = child(settings.embeddings_dir, name, what="file name")
    if target.exists() or target in taken:
        raise WebInputError(
            f"{name!r} is already in {settings.embeddings_dir.name}/; delete it first or rename the file"
        )
    data = await read_upload(upload, settings.max_embedding_bytes, "embedding")
    tmp = settings.embeddings_dir / f".upload-{uuid.uuid4().hex}{suffix}"  # hidden: no listing shows it
    try:
        tmp.write_bytes(data)
        read_embedding_file(tmp)  # the safe readers: tensors only, no pickle code runs
    except LdmUserError as exc:
        tmp.unlink(missing_ok=True)
        raise WebInputError(f"{name!r} was refused: {str(exc).replace(str(tmp), 'it')}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, target


def convert(settings: WebSettings, file: str, format: str, out: str | None = None, name: str | None = None) -> FileInfo:
    """Write library file `file` in `format` as a new library file (default name: <stem>-<format>)."""
    if format not in FORMAT_SUFFIX:
        raise WebInputError(f"format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    src = library_path(settings, file)
    dst = _new_file(settings, out or f"{Path(file).stem}-{format}", FORMAT_SUFFIX[format], "new file")
    if format == "diffusers" and _is_sdxl(src):
        raise WebInputError(
            f"{file!r} is an SDXL embedding, which diffusers reads as two files; download them with the "
            "row's 'diffusers pair (.zip)' link, or choose sdxl (clip_l/clip_g .safetensors) here"
        )
    if name and not TERM_NAME.fullmatch(name.strip()):
        raise WebInputError(f"term name {name!r} is not one word; use letters, digits, '-', '_', '<>' or '*'")
    dst, _fmt, _terms = convert_embedding(src, dst, format=format, name=(name or None))
    return _info(settings, dst)


def _is_sdxl(path: Path) -> bool:
    return split_of(read_embedding_file(path)[0]) is not None


def diffusers_pair_zip(settings: WebSettings, file: str) -> tuple[bytes, str]:
    """(zip bytes, zip name) holding diffusers' SDXL pair for library file `file`: learned_embeds.safetensors
    (text_encoder) + learned_embeds_2.safetensors (text_encoder_2), the names its loader and example use.
    A pair already in the library is zipped as it is; a clip_l/clip_g file is converted first. The
    library is a flat folder where a pair is known by those fixed names, so the pair is a download, not
    a new library file."""
    src = library_path(settings, file)
    pair = complete_pair(src)
    if pair is not None:
        return _zip(pair), f"{Path(file).stem}.zip"
    if not _is_sdxl(src):
        raise WebInputError(
            f"{file!r} is not an SDXL embedding; diffusers reads it as one file: convert it to diffusers (.bin)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        first, _fmt, _terms = convert_embedding(src, Path(tmp) / "pair", format="diffusers")
        second = complete_pair(first)
        if second is None:  # the writer's contract: both halves beside each other
            raise RuntimeError(f"converting {file!r} to diffusers' pair wrote {first.name} alone")
        return _zip(second), f"{Path(file).stem}-diffusers.zip"


def _zip(paths: Sequence[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, arcname=path.name)
    return buffer.getvalue()


def merge(settings: WebSettings, files: Sequence[str], out: str, rename: bool = False) -> FileInfo:
    """Merge library files into one new file `out` (.pt paper by default; .bin/.safetensors: diffusers)."""
    if len(set(files)) < 2:
        raise WebInputError(f"merge needs at least two different files, got {len(set(files))}; tick two or more")
    sources = [library_path(settings, f) for f in files]
    if not out or not out.strip():
        raise WebInputError("the merged file needs a name, e.g. my-words.pt")
    suffix = Path(out.strip()).suffix.lower()
    dst = _new_file(settings, out, suffix if suffix in MERGE_FORMATS else ".pt", "merged file")
    dst, _fmt, _terms, _renames = merge_embedding_files(dst, sources, rename=rename)
    return _info(settings, dst)


def delete(settings: WebSettings, file: str) -> list[str]:
    """Remove a library file (diffusers' SDXL pair: both of its files); the names removed."""
    path = library_path(settings, file)
    pair = complete_pair(path)
    paths = list(pair) if pair is not None else [path]
    for p in paths:
        p.unlink()
    return [p.name for p in paths]


def add_run(settings: WebSettings, run: str, out: str | None = None) -> FileInfo:
    """Copy run `run`'s latest embedding into the library as <out or run name>.pt/.safetensors."""
    src = run_embedding(settings, run)
    read_embedding_file(src)  # a broken or half-written file is an error here, not in the library
    dst = _new_file(settings, out or run, src.suffix, "new file")
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return _info(settings, dst)
