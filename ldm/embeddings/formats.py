"""Read and write every embedding file format users exchange (DESIGN.md "Embedding files").

Reading looks at the bytes, not the suffix: a PNG signature, a safetensors header, else a pickle read by
`safe_torch_load`. The object found is then recognised by its keys, so e.g. a `.pt` holding a diffusers
dict reads too. Term names: the paper dict's "name" field if present, else the file stem (a multi-term
paper file names each term by its key); emb_params files take the stem; diffusers files the key.

Writing picks the format from the suffix unless told: `.pt`/`.ckpt`/`.pth` -> paper, `.bin` -> diffusers,
`.png` -> A1111 PNG, `.safetensors` -> emb_params for one term, diffusers for several (emb_params holds
only one). Tensors are written as plain contiguous float32 CPU tensors (never `nn.Parameter`), so any
`torch.load(weights_only=True)` reads our pickles without an allow-list. A single-term paper file keys its
vector by "*" as A1111 does: diffusers' loader reads only that key (its token comes from "name").

SDXL terms (two text encoders, sdxl.py) read from a {"clip_l", "clip_g"} dict in any container (name:
the "name" metadata of our safetensors, else the file stem) and from diffusers' two-file pair
(diffusers_pair.py: either file, or their folder). They are written by sdxl_files.py: {"clip_l",
"clip_g"} in `.safetensors` by default (with name/token/step metadata), as a plain pickle of the two
tensors (`.pt`/`.ckpt`/`.pth`/`.bin`), in a `.png` as A1111's payload, or as diffusers' pair.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ldm.embeddings import diffusers_pair, png
from ldm.embeddings.loaded import (
    A1111_PNG,
    DIFFUSERS,
    EMB_PARAMS,
    FORMATS,
    PAPER,
    SDXL,
    EmbeddingFileError,
    LoadedEmbedding,
    as_vectors,
    check_same_width,
)
from ldm.embeddings.sdxl import is_sdxl_dict, not_sdxl, sdxl_term, split_of
from ldm.embeddings.sdxl_files import choose_sdxl_format, write_sdxl
from ldm.embeddings.tensor_files import save_tensors
from ldm.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from ldm.fileio import atomic_path
from ldm.safe_load import read_safetensors, safe_torch_load

log = logging.getLogger(__name__)

PathLike = str | Path
PICKLE_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin")
DEFAULT_TOKEN = "*"
DEFAULT_TOKEN_ID = 265  # the CLIP id of "*", what the paper and A1111 write in string_to_token


class _PickledParameterDict:
    """Stand-in the unpickler builds instead of `nn.ParameterDict` (paper files store string_to_param as
    one). It only receives the pickled attribute dict; no Module code runs on untrusted data."""


_PARAMETER_DICT = [(_PickledParameterDict, "torch.nn.modules.container.ParameterDict")]


# -- reading --------------------------------------------------------------------------------------------
def _container(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(png.PNG_SIGNATURE[:8]):
        return "png"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    return "pickle"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _paper_terms(obj: Mapping, path: Path, fmt: str) -> list[LoadedEmbedding]:
    params = obj["string_to_param"]
    params = getattr(params, "_parameters", params)  # a pickled nn.ParameterDict keeps its tensors there
    if not isinstance(params, Mapping) or not params:
        raise EmbeddingFileError(f"{path}: 'string_to_param' holds no vectors; is it an embedding file?")
    name = _str_or_none(obj.get("name")) or path.stem
    step = _int_or_none(obj.get("step"))
    checkpoint = _str_or_none(obj.get("sd_checkpoint_name")) or _str_or_none(obj.get("sd_checkpoint"))
    single = len(params) == 1
    return [
        LoadedEmbedding(
            name=name if single else str(key),
            vectors=as_vectors(value, str(path), str(key)),
            token=str(key),
            step=step,
            checkpoint=checkpoint,
            source=path,
            format=fmt,
        )
        for key, value in params.items()
    ]


def _terms_from_object(obj: Any, path: Path, metadata: Mapping[str, str], fmt: str | None = None) -> list:
    if isinstance(obj, torch.Tensor):  # a bare tensor, as some tools save: one term named by the file
        return [LoadedEmbedding(path.stem, as_vectors(obj, str(path), path.stem), source=path, format=DIFFUSERS)]
    if not isinstance(obj, Mapping) or not obj:
        raise EmbeddingFileError(
            f"{path} holds a {type(obj).__name__}, not an embedding dict; "
            "pass a textual-inversion .pt/.bin/.safetensors/.png file"
        )
    if "string_to_param" in obj:
        return _paper_terms(obj, path, fmt or PAPER)
    flat = {k[len("string_to_param.") :]: v for k, v in obj.items() if str(k).startswith("string_to_param.")}
    if flat:  # a paper dict flattened into safetensors keys by some converters
        return _paper_terms({**metadata, "string_to_param": flat}, path, fmt or PAPER)
    if "emb_params" in obj:
        return [
            LoadedEmbedding(
                path.stem,
                as_vectors(obj["emb_params"], str(path), "emb_params"),
                step=_int_or_none(metadata.get("step")),
                checkpoint=_str_or_none(metadata.get("sd_checkpoint_name")),
                source=path,
                format=EMB_PARAMS,
            )
        ]
    if is_sdxl_dict(obj):
        return [
            sdxl_term(
                obj,
                str(path),
                _str_or_none(metadata.get("name")) or path.stem,
                token=_str_or_none(metadata.get("token")),
                step=_int_or_none(metadata.get("step")),
                checkpoint=_str_or_none(metadata.get("sd_checkpoint_name")),
                source=path,
                format=A1111_PNG if fmt == A1111_PNG else SDXL,
            )
        ]
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return [
            LoadedEmbedding(str(k), as_vectors(v, str(path), str(k)), token=str(k), source=path, format=DIFFUSERS)
            for k, v in obj.items()
        ]
    keys = ", ".join(repr(k) for k in list(obj)[:5])
    raise EmbeddingFileError(
        f"{path} has keys {keys} but no embedding vectors; pass a textual-inversion "
        "file (paper/A1111 .pt, emb_params or diffusers .safetensors/.bin, A1111 .png)"
    )


def _unreadable(path: Path, reason: str) -> EmbeddingFileError:
    return EmbeddingFileError(
        f"{path} is not a readable embedding file ({reason}); "
        "pass a .pt/.bin/.safetensors/.png textual-inversion embedding"
    )


def embedding_source(path: PathLike) -> Path:
    """The file that stands for `path`'s terms: a diffusers output folder -> its learned_embeds file; the
    second file of diffusers' SDXL pair -> the first. Errors as read_embedding_file for a missing path."""
    path = Path(path).expanduser()
    if path.is_dir():
        inner = diffusers_pair.folder_file(path)
        if inner is None:
            raise EmbeddingFileError(
                f"embedding file {path} is a folder without learned_embeds.safetensors/.bin; "
                "pass a .pt/.bin/.safetensors/.png embedding"
            )
        return inner
    if not path.is_file():
        raise EmbeddingFileError(f"embedding file {path} not found; pass a .pt/.bin/.safetensors/.png embedding")
    pair = diffusers_pair.complete_pair(path)
    return pair[0] if pair is not None else path


def read_embedding_file(path: PathLike) -> list[LoadedEmbedding]:
    """Every term in an embedding file of any supported format (detected from its content); a folder or
    either file of diffusers' SDXL pair reads the pair (see diffusers_pair.py)."""
    path = embedding_source(path)
    pair = diffusers_pair.complete_pair(path)
    if pair is not None:
        first, second = pair
        terms = diffusers_pair.join_pair(_load(first)[0], _load(second)[0], first, second)
    else:
        obj, metadata, kind = _load(path)
        terms = _terms_from_object(obj, path, metadata, fmt=A1111_PNG if kind == "png" else None)
    check_same_width(terms, str(path))
    return terms


def _load(path: Path) -> tuple[Any, dict[str, str], str]:
    """(the object in the file, its safetensors metadata, the container kind)."""
    kind = _container(path)
    metadata: dict[str, str] = {}
    try:
        if kind == "png":
            obj = png.read_png_payload(path)
        elif kind == "safetensors":
            obj, metadata = read_safetensors(path), _safetensors_metadata(path)
        else:
            obj = safe_torch_load(path, _PARAMETER_DICT)
    except (EmbeddingFileError, UnsafeCheckpointError):
        raise
    except CheckpointError as exc:  # say "embedding" rather than the model-checkpoint wording of safe_load
        reason = re.search(r"\((.*)\)", str(exc))
        raise _unreadable(path, reason.group(1) if reason else str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - junk bytes can make the unpickler raise anything
        raise _unreadable(path, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]) from None
    return obj, metadata, kind


# -- writing --------------------------------------------------------------------------------------------
def _choose_format(path: Path, format: str | None, terms: Sequence[LoadedEmbedding]) -> str:
    suffix, count = path.suffix.lower(), len(terms)
    if format == SDXL:
        raise ConfigError(f"embedding path {path}: format sdxl is clip_l + clip_g; {not_sdxl(terms[0])}")
    if format is None:
        if suffix == ".safetensors":
            return EMB_PARAMS if count == 1 else DIFFUSERS
        by_suffix = {".png": A1111_PNG, ".bin": DIFFUSERS, **{s: PAPER for s in (".pt", ".ckpt", ".pth")}}
        if suffix not in by_suffix:
            raise ConfigError(
                f"embedding path {path} has suffix {suffix!r}; use .pt, .safetensors, .bin or .png, "
                f"or pass format= one of {', '.join(FORMATS)}"
            )
        return by_suffix[suffix]
    if format not in FORMATS:
        raise ConfigError(f"embedding format {format!r} is unknown; choose one of {', '.join(FORMATS)}")
    allowed = {
        PAPER: PICKLE_SUFFIXES,
        EMB_PARAMS: (".safetensors",),
        A1111_PNG: (".png",),
        DIFFUSERS: PICKLE_SUFFIXES + (".safetensors",),
    }[format]
    if suffix not in allowed:
        raise ConfigError(f"embedding path {path}: format {format!r} needs a {'/'.join(allowed)} file name")
    if format == EMB_PARAMS and count != 1:
        raise ConfigError(
            f"embedding path {path}: emb_params holds one term, got {count}; "
            "write one file per term or use format='diffusers'"
        )
    return format


@functools.cache
def _first_token_id(text: str) -> int:
    from ldm.modules.encoders.tokenizer import load_tokenizer

    ids = load_tokenizer()(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if ids else DEFAULT_TOKEN_ID


def _plain(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()


def _unique_keys(keys: list[str], path: Path) -> list[str]:
    seen = [k for i, k in enumerate(keys) if k in keys[:i]]
    if seen:
        raise ConfigError(
            f"embedding path {path}: two terms would share the key {seen[0]!r}; give each term its own token/name"
        )
    return keys


def paper_dict(terms: Sequence[LoadedEmbedding], path: Path, token_ids: Mapping[str, int] | None = None) -> dict:
    """The paper / A1111 dict for `terms` (also the payload of the PNG format)."""
    if len(terms) == 1:
        keys = [DEFAULT_TOKEN]
    else:
        keys = _unique_keys([t.token or t.name for t in terms], path)
    ids = dict(token_ids or {})
    first = terms[0]
    return {
        "string_to_token": {
            k: int(ids[k]) if k in ids else (DEFAULT_TOKEN_ID if k == DEFAULT_TOKEN else _first_token_id(k))
            for k in keys
        },
        "string_to_param": {k: _plain(t.vectors) for k, t in zip(keys, terms)},
        "name": first.name if len(terms) == 1 else path.stem,
        "step": first.step,
        "sd_checkpoint": None,  # A1111 puts a model hash here; we only know the name
        "sd_checkpoint_name": first.checkpoint,
    }


def _metadata(term: LoadedEmbedding) -> dict[str, str]:
    values = {"name": term.name, "step": term.step, "sd_checkpoint_name": term.checkpoint}
    return {k: str(v) for k, v in values.items() if v is not None}


def write_embedding_file(
    path: PathLike,
    embeddings: LoadedEmbedding | Sequence[LoadedEmbedding],
    format: str | None = None,
    token_ids: Mapping[str, int] | None = None,
    preview: Image.Image | None = None,
) -> Path:
    """Write `embeddings` atomically; `format` defaults from the suffix (see the module docstring).
    `token_ids` overrides the ids written in a paper file's string_to_token; `preview` is the PNG image."""
    path = Path(path).expanduser()
    terms = [embeddings] if isinstance(embeddings, LoadedEmbedding) else list(embeddings)
    if not terms or not all(isinstance(t, LoadedEmbedding) for t in terms):
        raise ConfigError(f"embedding path {path}: nothing to write; pass one or more LoadedEmbedding")
    # Copies: normalising the vectors must not touch the caller's objects (NaN/inf are refused there too).
    terms = [
        dataclasses.replace(t, vectors=as_vectors(t.vectors, f"embedding {t.name!r}: refusing to write {path}", t.name))
        for t in terms
    ]
    check_same_width(terms, f"embedding path {path}")
    if split_of(terms[0]) is not None:
        return write_sdxl(path, terms, choose_sdxl_format(path, format, len(terms)), preview)
    fmt = _choose_format(path, format, terms)
    if fmt == PAPER:
        if len(terms) > 1:
            log.warning("%s holds %d terms; A1111 reads only one term per .pt file", path, len(terms))
        data = paper_dict(terms, path, token_ids)
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
    elif fmt == A1111_PNG:
        data = paper_dict(terms, path, token_ids)
        png.write_png(path, data, preview if preview is not None else png.preview_card(terms[0].name, terms[0].vectors))
    elif fmt == EMB_PARAMS:
        save_tensors({"emb_params": _plain(terms[0].vectors)}, path, _metadata(terms[0]))
    else:
        keys = _unique_keys([t.name for t in terms], path)
        save_tensors({k: _plain(t.vectors) for k, t in zip(keys, terms)}, path, {"format": "pt"})
    log.info("wrote %d embedding term(s) to %s (%s)", len(terms), path, fmt)
    return path
