"""The Textual Inversion paper's CLIP metrics, from a local CLIP model folder (never the network).

- image-image ("reconstruction"): the mean cosine similarity over every (generated, training) pair of
  CLIP image embeddings. It is 1 only when every image embeds identically; a set compared with itself
  scores below 1 as soon as its images differ, since the off-diagonal pairs count too.
- image-text ("editability"): the mean cosine similarity between each generated image and the prompt
  with the placeholder removed ("a photo of *" -> "a photo of").

Images are prepared as CLIP was trained: shortest side resized to the model's input size (bicubic),
centre-cropped square, scaled to [0, 1] and normalised with CLIP's mean/std. Written here with PIL,
numpy and torch, so neither torchvision nor transformers' image processors are needed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ldm.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

PathLike = str | Path
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's training statistics (RGB)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


# -- images ----------------------------------------------------------------------------------------------
def list_images(folder: PathLike, what: str) -> list[Path]:
    """The image files directly in `folder`, sorted by name; one-line errors for a missing or empty folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{what} {path}: no such folder; pass a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{what} {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def open_rgb(path: Path) -> Image.Image:
    """An image file as RGB, rotated as its EXIF says; transparency is flattened onto white."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"image {path} cannot be read ({type(exc).__name__}); remove it or re-save it") from None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


@dataclass(frozen=True)
class ClipImageTransform:
    """Resize the shortest side to `resize`, centre-crop `crop` x `crop`, normalise -> [3, crop, crop]."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        short, long = min(width, height), max(width, height)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, resample=Image.Resampling.BICUBIC)
        w, h = image.size
        if w < self.crop or h < self.crop:  # only when crop > resize: pad like a centre crop would
            canvas = Image.new("RGB", (max(w, self.crop), max(h, self.crop)), (0, 0, 0))
            canvas.paste(image, ((canvas.width - w) // 2, (canvas.height - h) // 2))
            image, (w, h) = canvas, canvas.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _pixels(value: Any, default: int) -> int:
    """An image-processor size entry (an int, or a dict with shortest_edge/height) -> pixels."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("shortest_edge", "height", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return default


def transform_for(folder: Path, image_size: int) -> ClipImageTransform:
    """CLIP's standard transform for `image_size`, with the folder's preprocessor_config.json values if any."""
    config: dict = {}
    config_file = folder / "preprocessor_config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s is not valid JSON; using CLIP's standard preprocessing", config_file)
    mean, std = config.get("image_mean", CLIP_MEAN), config.get("image_std", CLIP_STD)
    if not (isinstance(mean, list) and len(mean) == 3 and isinstance(std, list) and len(std) == 3):
        mean, std = CLIP_MEAN, CLIP_STD
    crop = _pixels(config.get("crop_size"), image_size)
    if crop != image_size:
        log.warning(
            "preprocessor crop %d differs from the model's image_size %d; using %d", crop, image_size, image_size
        )
    return ClipImageTransform(
        resize=_pixels(config.get("size"), image_size),
        crop=image_size,
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
    )


# -- text ------------------------------------------------------------------------------------------------
def strip_placeholder(prompt: str, placeholder: str = "*") -> str:
    """The prompt without the placeholder: "a photo of *" -> "a photo of", "a * on a beach" -> "a on a beach"."""
    if not placeholder:
        raise ConfigError("--placeholder is empty; pass the word the prompt uses for the concept, e.g. '*'")
    if placeholder not in prompt:
        log.warning("prompt %r does not contain the placeholder %r; scoring the prompt as it is", prompt, placeholder)
    text = prompt.replace(placeholder, " ")
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r" ([,.;:!?])", r"\1", text).strip(" ,;:")
    if not text:
        raise ConfigError(f'prompt {prompt!r} is only the placeholder; give text to score against, e.g. "a photo of *"')
    return text


# -- the model -------------------------------------------------------------------------------------------
class ClipScorer:
    """A transformers `CLIPModel` read from a local folder, with its tokenizer and image transform."""

    def __init__(self, model: Any, tokenizer: Any, transform: ClipImageTransform, device: torch.device):
        self.model, self.tokenizer, self.transform, self.device = model, tokenizer, transform, device

    @classmethod
    def from_folder(cls, folder: PathLike, device: str | None = None) -> ClipScorer:
        from ldm.devices import choose_device

        path = Path(folder).expanduser()
        if not path.is_dir():
            raise CheckpointError(
                f"--clip_model {path}: no such folder; pass a local CLIP model folder "
                "(saved with save_pretrained, e.g. a download of openai/clip-vit-large-patch14)"
            )
        config_file = path / "config.json"
        if not config_file.is_file() or not any((path / w).is_file() for w in WEIGHT_FILES):
            raise CheckpointError(
                f"--clip_model {path} has no CLIP model (needs config.json and "
                f"{' or '.join(WEIGHT_FILES[:2])}); pass a folder saved with save_pretrained"
            )
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            raise CheckpointError(f"--clip_model {path}: config.json is not a JSON object") from None
        if model_type != "clip":
            raise CheckpointError(
                f"--clip_model {path} holds a {model_type!r} model, not a full CLIP model "
                "(model_type 'clip', with image and text towers)"
            )
        torch_device = choose_device(device)
        from transformers import CLIPModel

        try:
            model, info = CLIPModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a broken folder
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise CheckpointError(f"--clip_model {path} cannot be loaded ({type(exc).__name__}: {first})") from None
        missing = list(info.get("missing_keys") or [])
        if missing:  # weights that would be random: the scores would mean nothing
            raise CheckpointError(
                f"--clip_model {path}: {len(missing)} weights are missing from the file "
                f"(first: {missing[0]}); pass a complete CLIP model"
            )
        model = model.to(torch_device, torch.float32).eval()
        return cls(
            model,
            _clip_tokenizer(path, model),
            transform_for(path, int(model.config.vision_config.image_size)),
            torch_device,
        )

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """Unit-length CLIP image embeddings [N, D] (float32, CPU)."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = torch.stack([self.transform(im) for im in images[i : i + batch_size]]).to(self.device)
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            out.append(self.model.visual_projection(pooled).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length CLIP text embeddings [N, D] (float32, CPU)."""
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).pooler_output
        return torch.nn.functional.normalize(self.model.text_projection(pooled).float().cpu(), dim=-1)


def _clip_tokenizer(path: Path, model: Any) -> Any:
    """The tokenizer saved in the model folder, else `tokenizer/` beside it, else the shipped CLIP BPE
    (every OpenAI CLIP uses the same vocabulary)."""
    from ldm.modules.encoders.tokenizer import load_tokenizer

    max_length = int(model.config.text_config.max_position_embeddings)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return load_tokenizer(explicit=path, max_length=max_length)
    return load_tokenizer(model_path=path, max_length=max_length)


# -- the metrics -----------------------------------------------------------------------------------------
def image_image_similarity(generated: torch.Tensor, training: torch.Tensor) -> float:
    """Mean cosine over all (generated, training) pairs of unit-length embeddings."""
    return float((generated @ training.T).mean())


def image_text_similarity(generated: torch.Tensor, text: torch.Tensor) -> float:
    """Mean cosine between each generated image embedding and the one text embedding [1, D]."""
    return float((generated @ text.T).mean())


@dataclass
class ClipScores:
    image_image: float
    image_text: float
    text: str
    prompt: str
    n_generated: int
    n_training: int
    clip_model: str

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_clip(
    clip_model: PathLike,
    generated: PathLike,
    training: PathLike,
    prompt: str,
    placeholder: str = "*",
    device: str | None = None,
    batch_size: int = 32,
) -> ClipScores:
    """Both metrics for a folder of generated images against a folder of training images."""
    text = strip_placeholder(prompt, placeholder)
    generated_files = list_images(generated, "--generated")
    training_files = list_images(training, "--training")
    scorer = ClipScorer.from_folder(clip_model, device=device)
    gen = scorer.image_features([open_rgb(p) for p in generated_files], batch_size)
    train = scorer.image_features([open_rgb(p) for p in training_files], batch_size)
    txt = scorer.text_features([text])
    return ClipScores(
        image_image=image_image_similarity(gen, train),
        image_text=image_text_similarity(gen, txt),
        text=text,
        prompt=prompt,
        n_generated=len(generated_files),
        n_training=len(training_files),
        clip_model=str(clip_model),
    )


def format_table(scores: ClipScores) -> str:
    """A small plain-text table of the scores."""
    rows = [
        ("metric", "score", "pairs"),
        (
            "image-image (generated vs training)",
            f"{scores.image_image:.4f}",
            f"{scores.n_generated} x {scores.n_training}",
        ),
        (f"image-text ({scores.text!r})", f"{scores.image_text:.4f}", f"{scores.n_generated} x 1"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
