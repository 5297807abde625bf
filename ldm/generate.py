"""Generate: the programmatic API for making images with an SD v1 model (and, later, learned words)."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from PIL import Image

from ldm.devices import choose_device, choose_dtype
from ldm.errors import ConfigError
from ldm.image_utils import tensor_to_pil
from ldm.model_loading import load_model_from_config
from ldm.models.diffusion.sample import check_steps, sample_latents, sampler_step_count
from ldm.models.diffusion.sampling import get_sampler

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "stable-diffusion" / "v1-inference.yaml"
LATENT_FACTOR = 8  # the SD VAE downsamples by 8


def check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value < LATENT_FACTOR or value % LATENT_FACTOR:
            lower = max(LATENT_FACTOR, value - value % LATENT_FACTOR)
            raise ConfigError(f"{name} {value} is not a multiple of 8; use {lower} or {lower + LATENT_FACTOR}")


def random_seed() -> int:
    return random.randrange(0, 2**32 - 1)


class Generate:
    """Load once, generate many times. `model` may be passed in already built (tests, training callbacks)."""

    def __init__(self, config: Union[str, Path] = DEFAULT_CONFIG, weights: Optional[Union[str, Path]] = None,
                 device: Optional[str] = None, precision: str = "auto", sampler_name: str = "k_lms",
                 model: Optional[torch.nn.Module] = None, use_ema: Optional[bool] = None):
        self.config, self.weights, self.use_ema = config, weights, use_ema
        self.device = choose_device(device)
        self.dtype = choose_dtype(precision, self.device)
        get_sampler(sampler_name)  # fail now, not after a minute of loading
        self.sampler_name = sampler_name
        self.model = model

    def load_model(self) -> torch.nn.Module:
        if self.model is None:
            if self.weights is None:
                raise ConfigError("no weights given; pass --ckpt/--weights with an SD v1 .ckpt or .safetensors file")
            log.info("loading %s with %s", self.weights, self.config)
            self.model = load_model_from_config(self.config, self.weights, use_ema=self.use_ema,
                                                device=self.device, dtype=self.dtype)
        return self.model

    def step_count(self, steps: int, sampler_name: Optional[str] = None, karras: bool = False) -> int:
        """Steps the sampler will actually run (for progress bars)."""
        return sampler_step_count(self.load_model(), sampler_name or self.sampler_name, steps, karras)

    @torch.no_grad()
    def conditioning(self, prompts: list[str]) -> torch.Tensor:
        return self.load_model().get_learned_conditioning(prompts)

    @torch.no_grad()
    def txt2img(self, prompt: str, negative_prompt: str = "", iterations: int = 1, batch_size: int = 1,
                steps: int = 50, seed: Optional[int] = None, cfg_scale: float = 7.5, ddim_eta: float = 0.0,
                width: int = 512, height: int = 512, sampler_name: Optional[str] = None, karras: bool = False,
                step_callback: Optional[Callable[[dict], None]] = None,
                image_callback: Optional[Callable[[Image.Image, int], None]] = None) -> list[tuple[Image.Image, int]]:
        """`iterations` batches of `batch_size` images; batch i uses seed + i. Returns [(image, seed), ...]."""
        check_size(width, height)
        check_steps(steps)
        sampler = sampler_name or self.sampler_name
        get_sampler(sampler)
        model = self.load_model()
        seed = random_seed() if seed is None else int(seed)
        cond = self.conditioning([prompt] * batch_size)
        uncond = self.conditioning([negative_prompt] * batch_size) if cfg_scale != 1.0 else None
        channels = model.model.diffusion_model.in_channels
        shape = (batch_size, channels, height // LATENT_FACTOR, width // LATENT_FACTOR)
        results: list[tuple[Image.Image, int]] = []
        for i in range(iterations):
            generator = torch.Generator("cpu").manual_seed(seed + i)
            z = sample_latents(model, cond, uncond, shape=shape, generator=generator, sampler=sampler,
                               steps=steps, cfg_scale=cfg_scale, eta=ddim_eta, karras=karras, callback=step_callback)
            for image in tensor_to_pil(model.decode_first_stage(z)):
                results.append((image, seed + i))
                if image_callback is not None:
                    image_callback(image, seed + i)
        return results
