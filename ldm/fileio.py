"""Atomic file writes: a temp file in the same folder, then rename, so no reader ever sees half a file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ldm.errors import ConfigError

PathLike = str | Path
FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        return False


def _missing_parents(folder: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for `folder`, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def check_output_dir(path: PathLike, what: str) -> Path:
    """Refuse an output folder that cannot be made or written (a file in the way, a read-only disk) before any
    work starts; `what` names the flag (e.g. "--outdir"). Creates nothing."""
    path = Path(path).expanduser()
    missing = _missing_parents(path)
    existing = missing[-1].parent if missing else path
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{what} {path}: not a folder{where}; pass a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {existing} is not writable; fix its permissions or pass another folder")
    return path


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`. On error the temp file and any
    folders made for it are removed, so a failed write (full disk, bad path) leaves nothing behind."""
    path = Path(path)
    made = _missing_parents(path.parent)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask like open() would
        os.replace(tmp, path)
    except BaseException as exc:
        # torch.save and safetensors report a full disk as RuntimeError/SafetensorError: ask the disk,
        # before the temp file is removed and its space comes back.
        full = isinstance(exc, Exception) and not isinstance(exc, OSError) and _disk_full(path.parent)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in made:  # deepest first; a folder something else wrote into meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        if isinstance(exc, OSError) and (exc.filename is None or exc.filename == tmp):
            # A write error (ENOSPC) names no file, or the hidden temp one: name the file the user asked for.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


@contextmanager
def atomic_folder(folder: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `folder` (a half-written one from an
    interrupted run included), on any error it is removed, so `folder` is never left half-written."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_png(image: Image.Image, path: PathLike, text: dict[str, str] | None = None) -> Path:
    """Write a PNG (with optional tEXt chunks) atomically."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)
