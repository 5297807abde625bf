"""The recipe of an image, written into its PNG so other tools (and !fetch) can read it back.

Three text chunks: `Dream` (the invoke> command), `sd-metadata` (InvokeAI JSON) and `parameters`
(AUTOMATIC1111's text form).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ldm.errors import ConfigError
from ldm.invoke.switches import format_command

APP_ID = "textual-inversion-ldm"
A1111_SAMPLER_NAMES = {
    "ddim": "DDIM",
    "plms": "PLMS",
    "k_euler": "Euler",
    "k_euler_a": "Euler a",
    "k_heun": "Heun",
    "k_lms": "LMS",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpmpp_2m": "DPM++ 2M",
}


def dream_command(recipe: dict) -> str:
    """The full command that regenerates one image: its own seed, one iteration, negatives in [brackets]."""
    values = {**recipe, "iterations": None, "grid": None}
    if recipe.get("negative_prompt"):
        values["prompt"] = f"{recipe['prompt']} [{recipe['negative_prompt']}]"
    return format_command(values)


def sd_metadata(recipe: dict, model_name: str, model_hash: str) -> dict:
    prompt = [{"prompt": recipe["prompt"], "weight": 1.0}]
    image = {
        "prompt": prompt,
        "negative_prompt": recipe.get("negative_prompt", ""),
        "steps": recipe["steps"],
        "cfg_scale": recipe["cfg_scale"],
        "threshold": 0,
        "perlin": 0,
        "height": recipe["height"],
        "width": recipe["width"],
        "seed": recipe["seed"],
        "seamless": False,
        "hires_fix": False,
        "type": "img2img" if recipe.get("init_img") else "txt2img",
        "postprocessing": None,
        "sampler": recipe["sampler_name"],
        "variations": [],
        "karras": bool(recipe.get("karras")),
        "ddim_eta": recipe.get("ddim_eta", 0.0),
        "embeddings": recipe.get("embeddings", []),
    }
    if recipe.get("init_img"):
        image.update(init_image_path=str(recipe["init_img"]), strength=recipe["strength"])
    return {
        "model": "stable diffusion",
        "model_id": model_name,
        "model_hash": model_hash,
        "app_id": APP_ID,
        "app_version": "0.1.0",
        "image": image,
    }


def a1111_parameters(recipe: dict, model_hash: str) -> str:
    lines = [recipe["prompt"]]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    fields = [
        f"Steps: {recipe['steps']}",
        f"Sampler: {A1111_SAMPLER_NAMES.get(recipe['sampler_name'], recipe['sampler_name'])}",
        f"CFG scale: {recipe['cfg_scale']}",
        f"Seed: {recipe['seed']}",
        f"Size: {recipe['width']}x{recipe['height']}",
        f"Model hash: {model_hash}",
    ]
    if recipe.get("karras"):
        fields.append("Schedule type: Karras")
    if recipe.get("init_img"):
        fields.append(f"Denoising strength: {recipe['strength']}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def png_chunks(recipe: dict, model_name: str = "", model_hash: str = "") -> dict[str, str]:
    return {
        "Dream": dream_command(recipe),
        "sd-metadata": json.dumps(sd_metadata(recipe, model_name, model_hash)),
        "parameters": a1111_parameters(recipe, model_hash),
    }


def read_dream_command(path: str | Path) -> str:
    """The `Dream` command stored in an image (falls back to rebuilding it from `sd-metadata`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"!fetch {path}: no such image")
    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", {}) or {})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"!fetch {path}: not a readable image ({exc})") from None
    if text.get("Dream"):
        return text["Dream"]
    recipe = _recipe_from_sd_metadata(text.get("sd-metadata"))
    if recipe is None:
        raise ConfigError(f"!fetch {path}: the image carries no Dream or sd-metadata chunk")
    return dream_command(recipe)


def _recipe_from_sd_metadata(raw: str | None) -> dict | None:
    if not raw:
        return None
    try:
        image = json.loads(raw)["image"]
        prompt = image["prompt"][0]["prompt"] if isinstance(image["prompt"], list) else image["prompt"]
        return {
            "prompt": prompt,
            "negative_prompt": image.get("negative_prompt", ""),
            "steps": image["steps"],
            "seed": image["seed"],
            "width": image["width"],
            "height": image["height"],
            "cfg_scale": image["cfg_scale"],
            "sampler_name": image["sampler"],
            "karras": image.get("karras"),
            "ddim_eta": image.get("ddim_eta"),
            "init_img": image.get("init_image_path"),
            "strength": image.get("strength"),
        }
    except (ValueError, KeyError, TypeError, IndexError):
        return None
