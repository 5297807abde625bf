"""Captions proposed by a BLIP image-captioning model the user has on disk (never downloaded).

The folder is what transformers' `save_pretrained` writes for `BlipForConditionalGeneration` plus its
`BlipProcessor` (config.json, model.safetensors, the BERT tokenizer files, [pre]processor_config.json), e.g. a
local copy of Salesforce/blip-image-captioning-base. Decoding is greedy, so the same image always gets the
same caption. Only safetensors weights are read: nothing from the folder is unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ldm.data.images import load_image
from ldm.errors import CheckpointError
from ldm.fileio import atomic_path

log = logging.getLogger(__name__)

PathLike = str | Path
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # older / newer transformers
ARCHITECTURE = "BlipForConditionalGeneration"
MAX_NEW_TOKENS = 40  # BLIP captions are one short sentence


def check_folder(path: Path, what: str = "--caption_model") -> None:
    """One-line errors for a folder that cannot be a BLIP captioning model, before transformers sees it."""
    fix = "pass a BLIP image-captioning folder saved with save_pretrained (e.g. blip-image-captioning-base)"
    if not path.is_dir():
        raise CheckpointError(f"{what} {path}: no such folder; {fix}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{what} {path} has no config.json; {fix}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        model_type, architectures = config.get("model_type"), config.get("architectures") or []
    except (OSError, ValueError, AttributeError):
        raise CheckpointError(f"{what} {path}: config.json is not a JSON object; {fix}") from None
    if model_type != "blip":
        raise CheckpointError(f"{what} {path} holds a {model_type!r} model, not BLIP; {fix}")
    if architectures and ARCHITECTURE not in architectures:
        raise CheckpointError(f"{what} {path} is a {architectures[0]}, not {ARCHITECTURE} (captioning); {fix}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(
            f"{what} {path} has no model.safetensors (only safetensors weights are read); "
            "re-save it with save_pretrained(safe_serialization=True)"
        )
    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        raise CheckpointError(f"{what} {path} has no {PROCESSOR_FILES[0]}; save its BlipProcessor there too")


class Captioner:
    """A BLIP captioning model and its processor; `caption(images)` -> one caption per image."""

    def __init__(self, model: Any, processor: Any, batch_size: int = 8, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model, self.processor = model, processor
        self.batch_size, self.max_new_tokens = max(1, int(batch_size)), int(max_new_tokens)

    @classmethod
    def load(
        cls, folder: PathLike, what: str = "--caption_model", batch_size: int = 8, max_new_tokens: int = MAX_NEW_TOKENS
    ) -> Captioner:
        """Read the model and processor from `folder` (local files only); `what` names the input in errors."""
        path = Path(folder).expanduser()
        check_folder(path, what)
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the one-line-errors rule: no loading bars on stderr
        try:
            model = BlipForConditionalGeneration.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
            processor = BlipProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a broken folder
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise CheckpointError(f"{what} {path} cannot be loaded ({type(exc).__name__}: {first})") from None
        log.info("loaded the captioning model from %s", path)
        return cls(model.eval(), processor, batch_size=batch_size, max_new_tokens=max_new_tokens)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order; greedy decoding, `batch_size` images per forward pass."""
        import torch  # here, not at the top: preprocess.py without --caption_model stays torch-free

        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt")
            with torch.no_grad():
                tokens = self.model.generate(
                    pixel_values=inputs["pixel_values"],
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                )
            texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
            captions.extend(" ".join(text.split()) for text in texts)
        return captions


def caption_files(captioner: Captioner, images: Sequence[PathLike], overwrite: bool = False) -> dict[Path, str]:
    """Write `<stem>.txt` beside each image that has none (every image with `overwrite`); returns what was
    written. An empty caption is not written (it would train on nothing) and is logged instead."""
    todo = [Path(p) for p in images if overwrite or not Path(p).with_suffix(".txt").is_file()]
    pictures = [load_image(path)[0] for path in todo]  # decode all first: a corrupt file writes nothing
    written: dict[Path, str] = {}
    for path, text in zip(todo, captioner.caption(pictures)):
        if not text:
            log.warning("the captioning model gave %s an empty caption; write one by hand", path.name)
            continue
        with atomic_path(path.with_suffix(".txt")) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        written[path] = text
    log.info("captioned %d of %d images", len(written), len(images))
    return written
