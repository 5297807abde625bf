"""What the ImageLogger shows: the inputs, their captions, and samples of those captions with and
without guidance, from a fixed seed so grids of different steps are comparable.

With `prompt` (the preview prompt, learned word included) the samples draw that prompt instead of the
batch's captions, and `negative_prompt` replaces the empty unconditional prompt of the guided grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ldm.models.diffusion.sample import sample_latents


def caption_images(captions: list[str], size: int) -> torch.Tensor:
    """Render captions as images [N, 3, size, size] in [-1, 1] (the 'conditioning' grid)."""
    out = []
    for text in captions:
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        words, lines, line = text.split(), [], ""
        for word in words:  # crude wrap: ~6 px per character with the default font
            if len(line) + len(word) + 1 > max(8, size // 7):
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        draw.multiline_text((4, 4), "\n".join(lines), fill="black")
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(out)


@torch.no_grad()
def log_images(
    model: Any,
    batch: Mapping[str, Any],
    n: int = 4,
    ddim_steps: int = 50,
    ddim_eta: float = 0.0,
    unconditional_guidance_scale: float = 5.0,
    sampler: str = "ddim",
    seed: int = 0,
    prompt: str | None = None,
    negative_prompt: str = "",
    **ignored: Any,
) -> dict[str, torch.Tensor]:
    images = batch["image"][:n]
    # A preview prompt draws n samples of one prompt (seeded, so every grid of the run is comparable).
    captions = [str(prompt)] * n if prompt else list(batch["caption"])[: len(images)]
    # The training path's conditioner: the captions exactly as the steps see them, learned words included;
    # SDXL's size conditioning says the size of the grid's images (that of the batch).
    size = tuple(images.shape[-2:])
    cond = model.prompt_conditioner(captions, target_size=size)
    h, w = images.shape[-2] // model.latent_factor, images.shape[-1] // model.latent_factor
    shape = (len(captions), model.latent_channels, h, w)
    shown = [f"{c} [{negative_prompt}]" if negative_prompt else c for c in captions]
    out = {"inputs": images.float().cpu(), "conditioning": caption_images(shown, images.shape[-1])}
    for key, scale in (("samples", 1.0), ("samples_scaled", unconditional_guidance_scale)):
        negative = [str(negative_prompt or "")] * len(captions)
        uncond = model.prompt_conditioner(negative, target_size=size) if scale != 1.0 else None
        g = torch.Generator("cpu").manual_seed(seed)
        z = sample_latents(
            model,
            cond,
            uncond,
            shape=shape,
            generator=g,
            sampler=sampler,
            steps=ddim_steps,
            cfg_scale=scale,
            eta=ddim_eta,
        )
        out[key] = model.decode_first_stage(z).float().cpu()
    return out
