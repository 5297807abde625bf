"""Inputs for running diffusers' textual-inversion example itself: the benchmark's weights as a diffusers
folder, and a small concept folder both training scripts read."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ldm.fileio import atomic_folder
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

log = logging.getLogger(__name__)
PathLike = str | Path

# SD v1's own scheduler/scheduler_config.json; the example reads it with DDPMScheduler.from_pretrained.
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
}


def diffusers_folder(ckpt: PathLike, folder: PathLike, config: PathLike | None = None) -> Path:
    """Write (once) the weights of `ckpt` as an SD v1 diffusers folder, in fp32 as SD v1's own folders hold
    them. Converted by diffusers' single-file converters, saved by each library's `save_pretrained`."""
    import diffusers

    from ldm.benchmark.diffusers_side import load_components
    from ldm.benchmark.weights import SD_CONFIG

    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    import torch

    log.info("writing %s as a diffusers folder -> %s", ckpt, folder)
    with atomic_folder(folder) as tmp:
        parts = load_components(str(ckpt), torch.float32, config or SD_CONFIG)
        for name in ("unet", "vae", "text_encoder"):
            parts[name].save_pretrained(tmp / name)
            del parts[name]
        shutil.copytree(SHIPPED_TOKENIZER, tmp / "tokenizer")
        (tmp / "scheduler").mkdir()
        scheduler = {**SCHEDULER_CONFIG, "_diffusers_version": diffusers.__version__}
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
        index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def concept_folder(folder: PathLike, n_images: int = 5, size: int = 320, seed: int = 0) -> Path:
    """`n_images` seeded random-texture JPEGs: a typical small concept folder, larger than the training size
    so both scripts resize as they would for real photos."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        path = folder / f"{i:02}.jpg"
        if not path.is_file():
            coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC).save(path, quality=95)
    return folder
