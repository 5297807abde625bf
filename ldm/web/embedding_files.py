"""What the Embeddings page lists: the files of the embeddings folder and the final embedding of each
training run, each with its terms (word, vectors, width), the model family its width fits and the
catalog's models it fits. Files are read only through ldm/embeddings' safe readers (no pickle code runs),
and remembered by (path, size, mtime) so a page load does not re-read unchanged files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ldm.embeddings import read_embedding_file
from ldm.embeddings.diffusers_pair import is_second
from ldm.embeddings.families import family_of_width
from ldm.embeddings.library import SUFFIXES, prompt_name
from ldm.embeddings.sdxl import split_of
from ldm.errors import LdmUserError
from ldm.web.catalog import ModelEntry, list_models
from ldm.web.security import WebInputError, child
from ldm.web.settings import WebSettings

RUN_EMBEDDINGS = ("embeddings.pt", "embeddings.safetensors")  # main.py's latest embedding (SDXL: .safetensors)


@dataclass(frozen=True)
class TermInfo:
    name: str
    word: str  # what a prompt writes to use it (the library's naming rule)
    token: str | None
    vectors: int
    step: int | None


@dataclass(frozen=True)
class FileInfo:
    id: str  # library: the file name; runs: the run folder's name
    kind: str  # "library" | "run"
    bytes: int
    format: str | None
    width: int | None
    family: str | None  # e.g. "SD 1.x (CLIP ViT-L)", None for a width no public family has
    fits: tuple[str, ...]  # ids of the catalog's models whose text encoders are this wide
    terms: tuple[TermInfo, ...]
    error: str | None = None  # why it cannot be read (then it has no terms)
    sdxl: bool = False  # clip_l + clip_g terms: diffusers takes them as its two-file pair

    def as_json(self) -> dict:
        return asdict(self)


def library_files(settings: WebSettings) -> list[FileInfo]:
    """Every embedding file at the top of the embeddings folder, by name."""
    folder = settings.embeddings_dir
    if not folder.is_dir():
        return []
    widths = model_widths(settings)
    paths = sorted((p for p in folder.iterdir() if listed(p)), key=lambda p: p.name.lower())
    return [describe(p, p.name, "library", widths) for p in paths]


def run_files(settings: WebSettings) -> list[FileInfo]:
    """The latest embedding of every training run under logs/ that has written one, newest run first."""
    logs = settings.logs_dir
    if not logs.is_dir():
        return []
    widths = model_widths(settings)
    found = [(run.name, path) for run in logs.iterdir() if (path := _run_file(run)) is not None]
    found.sort(key=lambda item: item[1].stat().st_mtime, reverse=True)
    return [describe(path, name, "run", widths) for name, path in found]


def listed(path: Path) -> bool:
    """A file the library shows: an embedding suffix, not hidden, not an A1111 preview, not a pair's 2nd file."""
    name = path.name.lower()
    return (
        path.is_file()
        and not name.startswith(".")
        and not name.endswith(".preview.png")
        and name.endswith(SUFFIXES)
        and not is_second(path)
    )


def library_path(settings: WebSettings, file: str) -> Path:
    """The library file `file` names (an id, checked to stay inside the folder); a clear error if none."""
    path = child(settings.embeddings_dir, file, what="embedding")
    if not listed(path):
        raise WebInputError(f"embedding {file!r} is not in {settings.embeddings_dir.name}/; pick one from the list")
    return path


def run_embedding(settings: WebSettings, run: str) -> Path:
    """The latest embedding file of run `run` (an id: the run folder's name)."""
    path = _run_file(child(settings.logs_dir, run, what="run"))
    if path is None:
        raise WebInputError(f"run {run!r} has no checkpoints/embeddings.pt yet; train it on the Train page first")
    return path


def _run_file(run: Path) -> Path | None:
    for name in RUN_EMBEDDINGS:
        path = run / "checkpoints" / name
        if path.is_file():
            return path
    return None


def model_widths(settings: WebSettings) -> dict[str, int]:
    """Model id -> its text encoders' width (the width of the embeddings it takes)."""
    widths = {}
    for entry in list_models(settings):
        width = text_width(entry)
        if width is not None:
            widths[entry.id] = width
    return widths


_WIDTHS: dict[tuple[str, int], int | None] = {}


def text_width(entry: ModelEntry) -> int | None:
    """The UNet's cross-attention width: what the text encoders hand it, so what an embedding must be."""
    path = entry.inference_config
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _WIDTHS:
        params = OmegaConf.load(path).model.get("params", {})
        unet = params.get("unet_config") or params.get("network_config") or {}  # ours / sgm's (SDXL)
        width = (unet.get("params") or {}).get("context_dim")
        _WIDTHS[key] = width if isinstance(width, int) else None
    return _WIDTHS[key]


_CACHE: dict[tuple[str, int, int], tuple] = {}


def describe(path: Path, ident: str, kind: str, widths: dict[str, int]) -> FileInfo:
    """One file's terms, format, width, family and fitting models (read once per size and mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = _read(path)
    fmt, width, terms, error, sdxl = _CACHE[key]
    fits = tuple(model for model, w in widths.items() if w == width)
    family = family_of_width(width) if width else None
    return FileInfo(ident, kind, stat.st_size, fmt, width, family, fits, terms, error, sdxl)


def _read(path: Path) -> tuple:
    try:
        loaded = read_embedding_file(path)
    except (LdmUserError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, None, (), reason.replace(f"{path.parent}/", ""), False
    terms = tuple(TermInfo(t.name, prompt_name(t), t.token, t.num_vectors, t.step) for t in loaded)
    return loaded[0].format, loaded[0].dim, terms, None, split_of(loaded[0]) is not None
