"""The models the UI offers: every weights file under models/ with the configs to sample and train it.

A request names a model by its id (its path under models/, '/'-separated), never by a path. The config of
a weights file is, first found: a sidecar `<stem>.yaml` next to it (A1111's convention; optional
`<stem>.finetune.yaml` / `<stem>.finetune_style.yaml` beside it), the folder's MANIFEST.json "config" (the
toy worlds), or the stock config of the family its keys tell (ldm/model_family.py). Files whose keys name
no family (e.g. models/toy-world/classifier.safetensors) are not models and are not listed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ldm.image_size import default_image_side
from ldm.model_family import SD1, SD2, SDXL, family_of_config, family_of_state_dict
from ldm.web.security import WebInputError
from ldm.web.settings import WebSettings

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".ckpt")
MAX_DEPTH = 4  # models/<a>/<b>/<c>/<file>; also stops symlink loops
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, for configs/ when the project folder has none
FAMILY_IDS = {SD1: "sd1", SD2: "sd2", SDXL: "sdxl"}
# Stock configs per family: (inference, finetune, finetune_style). SD 2.x files cannot tell v from eps;
# the 768 v-model (SD 2.1) is the common one, and a sidecar <stem>.yaml names the 512-base config instead.
STOCK = {
    "sd1": ("v1-inference.yaml", "v1-finetune.yaml", "v1-finetune_style.yaml"),
    "sd2": ("v2-inference-v.yaml", "v2-finetune.yaml", "v2-finetune_style.yaml"),
    "sdxl": ("sdxl-base-inference.yaml", "sdxl-finetune.yaml", "sdxl-finetune_style.yaml"),
}


@dataclass(frozen=True)
class ModelEntry:
    id: str  # path under models/, '/'-separated: "toy-world/toy-world.safetensors"
    weights: Path
    inference_config: Path
    finetune_config: Path | None
    finetune_style_config: Path | None
    family: str  # "sd1" | "sd2" | "sdxl"
    size: int  # default image side in pixels


def list_models(settings: WebSettings) -> list[ModelEntry]:
    """Every model under settings.models_dir, sorted by id."""
    root = settings.models_dir
    if not root.is_dir():
        return []
    entries = [entry for path in _weight_files(root) if (entry := _entry(settings, root, path)) is not None]
    return sorted(entries, key=lambda e: e.id)


def get_model(settings: WebSettings, model_id: str) -> ModelEntry:
    """The catalog entry of `model_id`; a WebInputError naming the id when no listed model has it."""
    for entry in list_models(settings):
        if entry.id == model_id:
            return entry
    raise WebInputError(f"model {model_id!r} is not in {settings.models_dir.name}/; pick one from the list")


def _weight_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = [] if depth >= MAX_DEPTH else sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if f.lower().endswith(WEIGHT_SUFFIXES) and f[0] != "."]
    return found


def _entry(settings: WebSettings, root: Path, path: Path) -> ModelEntry | None:
    family = _family_of_keys(path)
    if family is None:
        return None  # not a Stable Diffusion model (a classifier, a VAE alone, an unreadable file)
    configs = _sidecar(settings, path) or _manifest(settings, path) or _stock(settings, family)
    if configs is None:
        log.warning("no config for %s (family %s): put a %s.yaml next to it", path, family, path.stem)
        return None
    inference, finetune, style = configs
    try:
        config = OmegaConf.load(inference)
        family = FAMILY_IDS.get(family_of_config(config.get("model", {})), family)
        size = default_image_side(config)
    except Exception as exc:  # a broken sidecar must not take the whole list down
        log.warning("skipping %s: its config %s does not load (%s)", path, inference, exc)
        return None
    model_id = path.relative_to(root).as_posix()
    return ModelEntry(model_id, path.absolute(), inference, finetune, style, family, size)


# (path, size, mtime_ns) -> family id or None: reading keys of a large .ckpt is not free
_FAMILY_CACHE: dict[tuple[str, int, int], str | None] = {}


def _family_of_keys(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FAMILY_CACHE:
        try:
            shapes = _key_shapes(path)
            _FAMILY_CACHE[key] = FAMILY_IDS.get(family_of_state_dict(shapes)) if shapes else None
        except Exception as exc:  # unreadable: say so in the log, leave it out of the list
            log.warning("skipping %s: cannot read its keys (%s)", path, exc)
            _FAMILY_CACHE[key] = None
    return _FAMILY_CACHE[key]


def _key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape, without reading the tensors."""
    if path.suffix.lower() == ".safetensors":
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= 100 * 2**20:
                raise ValueError("not a .safetensors header")
            header = json.loads(fh.read(size))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    import torch

    from ldm.safe_load import safe_globals

    # weights_only + the project's allow-list: nothing in the pickle runs; mmap leaves the tensors on disk
    with torch.serialization.safe_globals(safe_globals()):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return {k: tuple(v.shape) for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}


Configs = tuple[Path, Path | None, Path | None]


def _existing(path: Path) -> Path | None:
    return path.absolute() if path.is_file() else None


def _sidecar(settings: WebSettings, path: Path) -> Configs | None:
    inference = _existing(path.with_suffix(".yaml"))
    if inference is None:
        return None
    stock = _stock_from_config(settings, inference)
    finetune = _existing(path.with_name(f"{path.stem}.finetune.yaml")) or (stock and stock[1])
    style = _existing(path.with_name(f"{path.stem}.finetune_style.yaml")) or (stock and stock[2])
    return inference, finetune, style


def _stock_from_config(settings: WebSettings, inference: Path) -> Configs | None:
    """The stock training configs of the family a sidecar's config is of (the sidecar names only inference)."""
    try:
        family = FAMILY_IDS.get(family_of_config(OmegaConf.load(inference).get("model", {})))
    except Exception:
        return None
    return _stock(settings, family) if family else None


def _manifest(settings: WebSettings, path: Path) -> Configs | None:
    manifest = path.parent / "MANIFEST.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", manifest, exc)
        return None
    name = data.get("config") if isinstance(data, dict) else None
    if not isinstance(name, str) or path.name not in (data.get("files") or {path.name: None}):
        return None
    inference = _project_file(settings, name)
    if inference is None:
        return None
    # the toy worlds: configs/toy-world/inference.yaml -> finetune.yaml, xl-inference.yaml -> xl-finetune.yaml
    finetune = _existing(inference.with_name(inference.name.replace("inference", "finetune")))
    style = _existing(inference.with_name(inference.name.replace("inference", "finetune_style")))
    return inference, finetune, style


def _stock(settings: WebSettings, family: str) -> Configs | None:
    names = STOCK.get(family)
    if names is None:
        return None
    inference, finetune, style = (_project_file(settings, f"configs/stable-diffusion/{n}") for n in names)
    return (inference, finetune, style) if inference is not None else None


def _project_file(settings: WebSettings, relative: str) -> Path | None:
    """A file named relative to the project folder (settings.root), else to this checkout."""
    for root in (settings.root, REPO_ROOT):
        found = _existing(root / relative)
        if found is not None:
            return found
    return None
