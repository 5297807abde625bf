"""The gallery: generated PNGs in settings.outputs_dir, newest first, each with the recipe read back from
its own text chunks (so "reuse this recipe" works for any image invoke.py or this UI wrote).

Init images of img2img are stored re-encoded under `init/`, named by their content's sha256, and the
recipe names them by their path from the project folder (what `invoke> !fetch` passes to `-I`).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ldm.errors import ConfigError
from ldm.web.security import WebInputError, check_id, child
from ldm.web.settings import WebSettings

MAX_LISTED = 500  # newest images shown; older ones stay on disk


def init_dir(settings: WebSettings) -> Path:
    return settings.outputs_dir / "init"


def store_init_image(settings: WebSettings, image: Image.Image) -> str:
    """Save an already verified, re-encoded image as init/<sha256[:16]>.png; returns its id (the file name)."""
    from ldm.fileio import save_png

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    name = hashlib.sha256(buffer.getvalue()).hexdigest()[:16] + ".png"
    path = init_dir(settings) / name
    if not path.is_file():
        save_png(image.convert("RGB"), path)
    return name


def init_path(settings: WebSettings, init_id: str) -> Path:
    path = child(init_dir(settings), init_id, what="init image")
    if not path.is_file() or path.suffix != ".png":
        raise WebInputError(f"init image {init_id!r} is not in the gallery's init folder; upload it again", status=404)
    return path


def image_path(settings: WebSettings, image_id: str) -> Path:
    """outputs/web/<image_id>, a PNG of the gallery (404 when there is none)."""
    check_id(image_id, "image")
    if not image_id.lower().endswith(".png"):
        raise WebInputError(f"image {image_id!r} is not a PNG of the gallery; pick one from the gallery")
    path = child(settings.outputs_dir, image_id, what="image")
    if not path.is_file():
        raise WebInputError(f"no image {image_id!r} in the gallery; it may have been deleted", status=404)
    return path


def _relative(settings: WebSettings, path: Path) -> str:
    try:
        return path.resolve().relative_to(settings.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def save_results(settings: WebSettings, results: list, req: Any, used: list[str], model_hash: str) -> list[Path]:
    """Each (image, seed) as NNNNNN.<seed>.png with the recipe chunks invoke.py writes."""
    from ldm.fileio import save_png
    from ldm.invoke.metadata import png_chunks
    from ldm.invoke.session import next_prefix

    recipe = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "steps": req.steps,
        "width": req.width,
        "height": req.height,
        "cfg_scale": req.cfg_scale,
        "sampler_name": req.sampler,
        "karras": req.karras,
        "ddim_eta": 0.0,
        "init_img": _relative(settings, init_dir(settings) / req.init_id) if req.init_id else None,
        "strength": req.strength if req.init_id else None,
        "embeddings": used,
    }
    prefix = next_prefix(settings.outputs_dir) if settings.outputs_dir.is_dir() else 0
    paths = []
    for offset, (image, seed) in enumerate(results):
        chunks = png_chunks({**recipe, "seed": seed}, req.model, model_hash)
        paths.append(save_png(image, settings.outputs_dir / f"{prefix + offset:06}.{seed}.png", chunks))
    return paths


def _text_chunks(path: Path) -> dict[str, str]:
    try:
        with Image.open(path) as img:
            return dict(getattr(img, "text", {}) or {})
    except (OSError, ValueError):
        return {}


def read_recipe(settings: WebSettings, path: Path) -> dict[str, Any]:
    """The form's fields from an image's own chunks: `Dream` (the invoke> command) for the sampling
    settings, `sd-metadata` for the model id and the embeddings it used."""
    from ldm.invoke.metadata import read_dream_command
    from ldm.invoke.switches import parse_command
    from ldm.prompts.parser import split_negative

    try:
        values = parse_command(read_dream_command(path))
    except ConfigError as exc:
        raise WebInputError(f"image {path.name!r} carries no readable recipe ({exc})") from None
    positive, negative = split_negative(values["prompt"])
    meta = _sd_metadata(_text_chunks(path))
    init_id = None
    if values.get("init_img"):
        name = Path(values["init_img"]).name
        init_id = name if (init_dir(settings) / name).is_file() else None
    return {
        "image": path.name,
        "model": meta.get("model_id", ""),
        "prompt": positive,
        "negative_prompt": negative,
        "sampler": values.get("sampler_name", ""),
        "steps": values.get("steps"),
        "cfg_scale": values.get("cfg_scale"),
        "seed": values.get("seed"),
        "width": values.get("width"),
        "height": values.get("height"),
        "karras": bool(values.get("karras")),
        "strength": values.get("strength"),
        "init_id": init_id,
        "init_missing": bool(values.get("init_img")) and init_id is None,
        "embeddings": meta.get("image", {}).get("embeddings", []),
        "command": read_dream_command(path),
    }


def _sd_metadata(text: dict[str, str]) -> dict[str, Any]:
    try:
        data = json.loads(text.get("sd-metadata") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def list_gallery(settings: WebSettings, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
    """The gallery's PNGs, newest first (by write time, then name), each with its one-line recipe."""
    folder = settings.outputs_dir
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file() and not p.name.startswith(".")]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    items = []
    for path in files[:limit]:
        text = _text_chunks(path)
        items.append({"id": path.name, "command": text.get("Dream", ""), "parameters": text.get("parameters", "")})
    return items
