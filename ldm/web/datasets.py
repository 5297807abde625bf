"""Concept folders under training_data/: list, create, add uploaded photos, delete one, preprocess.

A concept is `settings.data_root/<concept>/`: images and their `<stem>.txt` captions, exactly what main.py's
--data_root reads. Uploads are stored there as re-encoded PNGs under a safe name made from the client's
file name. Preprocessing never touches the concept itself: it writes a sibling concept (by default
`<concept>-prepared`) in one swap (ldm/fileio.atomic_folder), so the originals stay for another try.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from PIL import Image

from ldm.data.images import IMAGE_EXTENSIONS
from ldm.data.preprocess import PreprocessOptions, preprocess_folder
from ldm.fileio import atomic_folder, save_png
from ldm.web.security import ID_PATTERN, WebInputError, check_id, child
from ldm.web.settings import WebSettings

log = logging.getLogger(__name__)

PREPARED_SUFFIX = "-prepared"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_STEM = 60


def concept_dir(settings: WebSettings, concept: str, must_exist: bool = True) -> Path:
    """The concept's folder inside the data root (404 when it does not exist and must)."""
    path = child(settings.data_root, concept, what="concept")
    if must_exist and not path.is_dir():
        raise WebInputError(f"concept {concept!r} does not exist; create it or pick one from the list", status=404)
    return path


def image_files(folder: Path) -> list[Path]:
    """The images directly in a concept folder, sorted by name (what training reads; sub-folders are not)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_file(settings: WebSettings, concept: str, file: str) -> Path:
    """One image of a concept, by its file name (404 when there is no such image)."""
    folder = concept_dir(settings, concept)
    path = child(folder, file, what="image")
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
        raise WebInputError(f"image {file!r} is not in concept {concept!r}; pick one from the grid", status=404)
    return path


def list_concepts(settings: WebSettings) -> list[dict]:
    """Every concept folder with its number of images and of captioned images."""
    root = settings.data_root
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if not folder.is_dir() or not ID_PATTERN.fullmatch(folder.name) or ".." in folder.name:
            continue  # a name the UI could not address (hidden, odd characters) is not offered
        images = image_files(folder)
        captioned = sum(1 for p in images if p.with_suffix(".txt").is_file())
        out.append({"name": folder.name, "images": len(images), "captioned": captioned})
    return out


def create_concept(settings: WebSettings, name: str) -> Path:
    """Make an empty concept folder; an existing one is refused (409) rather than reused silently."""
    path = concept_dir(settings, check_id(name.strip() if isinstance(name, str) else name, "concept"), False)
    if path.exists():
        raise WebInputError(f"concept {path.name!r} already exists; pick it from the list or choose another name", 409)
    path.mkdir(parents=True)
    log.info("created concept folder %s", path)
    return path


def safe_stem(client_name: str) -> str:
    """A file stem from the client's file name: letters, digits, '-' and '_' only (its words can still
    serve as [filewords]); "image" when nothing is left."""
    stem = Path(client_name.replace("\\", "/").rsplit("/", 1)[-1]).stem
    stem = _UNSAFE.sub("-", stem).strip("-_")[:MAX_STEM].strip("-_")
    return stem or "image"


def _free_name(folder: Path, stem: str, taken: set[str]) -> str:
    """`<stem>.png`, or `<stem>-2.png`, ... so no existing image or caption of the stem is overwritten."""
    existing = {p.stem.lower() for p in folder.iterdir()} | taken
    name, n = stem, 2
    while name.lower() in existing:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name.lower())
    return f"{name}.png"


def add_images(settings: WebSettings, concept: str, images: list[tuple[str, Image.Image]]) -> list[str]:
    """Store (client name, re-encoded image) pairs as PNGs in the concept; returns the new file names."""
    folder = concept_dir(settings, concept)
    names, taken = [], set()
    for client_name, image in images:
        name = _free_name(folder, safe_stem(client_name), taken)
        save_png(image, folder / name)
        names.append(name)
    log.info("added %d images to %s", len(names), folder)
    return names


def delete_image(settings: WebSettings, concept: str, file: str) -> None:
    """Remove an image and its caption (the caption only when no other image shares its stem)."""
    path = image_file(settings, concept, file)
    path.unlink()
    if not any(p.stem == path.stem for p in image_files(path.parent)):
        path.with_suffix(".txt").unlink(missing_ok=True)


def preprocess_concept(
    settings: WebSettings, concept: str, options: PreprocessOptions, target: str | None = None, replace: bool = False
) -> tuple[str, int]:
    """Prepare the concept's images into the sibling concept `target` (default `<concept>-prepared`),
    captions carried over; returns (target, number of images written). An existing target is replaced
    only with `replace` (its own caption edits would be lost)."""
    src = concept_dir(settings, concept)
    target = target or f"{concept}{PREPARED_SUFFIX}"
    dst = concept_dir(settings, target, must_exist=False)
    if dst == src:
        raise WebInputError(f"target {target!r} is the concept itself; prepare into another concept")
    if not image_files(src):
        raise WebInputError(f"concept {concept!r} has no images; upload photos first")
    if dst.exists() and not replace:
        raise WebInputError(
            f"concept {target!r} already exists; tick 'replace' to prepare it again (its caption edits are lost)", 409
        )
    options.validate()
    with atomic_folder(dst) as tmp:
        written = preprocess_folder(src, tmp, options)
    log.info("prepared %d images of %s into %s", len(written), src, dst)
    return target, len(written)
