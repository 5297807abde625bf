"""Find and load the CLIP BPE tokenizer without ever touching the network.

Order: an explicit path -> a `tokenizer/` folder beside the model -> the copy shipped in ldm/assets.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ldm.errors import ConfigError

log = logging.getLogger(__name__)

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "clip_tokenizer"
_REQUIRED = ("vocab.json", "merges.txt")
_FAST = "tokenizer.json"  # what transformers >= 5 saves instead (diffusers save_pretrained folders)

PathLike = str | Path


def _is_tokenizer_dir(path: Path, fast_ok: bool = True) -> bool:
    if not path.is_dir():
        return False
    return all((path / name).is_file() for name in _REQUIRED) or (fast_ok and (path / _FAST).is_file())


def resolve_tokenizer_dir(
    explicit: PathLike | None = None,
    model_path: PathLike | None = None,
    subfolder: str = "tokenizer",
    fast_ok: bool = True,
) -> Path:
    """Return the folder holding vocab.json and merges.txt (or, if `fast_ok`, transformers 5's
    tokenizer.json), by the documented search order. `subfolder` is where a diffusers folder keeps this
    encoder's tokenizer (SDXL's second: `tokenizer_2`)."""
    files = "vocab.json + merges.txt" + (" (or tokenizer.json)" if fast_ok else "")
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_tokenizer_dir(path, fast_ok):
            raise ConfigError(
                f"tokenizer path {str(path)!r} has no {files}; "
                "point it at a CLIP tokenizer folder or leave it unset to use the shipped one"
            )
        return path
    if model_path:
        model = Path(model_path).expanduser()
        folder = model if model.is_dir() else model.parent
        candidate = folder / subfolder
        if _is_tokenizer_dir(candidate, fast_ok):
            log.info("using the tokenizer beside the model: %s", candidate)
            return candidate
    return SHIPPED_TOKENIZER


def load_tokenizer(
    explicit: PathLike | None = None,
    model_path: PathLike | None = None,
    max_length: int = 77,
    subfolder: str = "tokenizer",
):
    """A transformers CLIPTokenizer read from local files only."""
    from transformers import CLIPTokenizer  # heavy import, deferred until a tokenizer is needed

    path = resolve_tokenizer_dir(explicit, model_path, subfolder)
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.model_max_length = max_length
    return tokenizer
