"""Generate: the programmatic API for making images with an SD 1.x, 2.x or SDXL model and learned words.

    gen = Generate(weights="sd-v1-4.ckpt", embedding_paths=["logs/.../embeddings.pt"])
    for image, seed in gen.prompt2image("a photo of * [blurry]", steps=30, seed=42): ...

Prompts go through `ldm.prompts.Conditioner`: long prompts are chunked, A1111 emphasis applies, and
the words of the embedding library (explicit files + an embeddings directory) are spliced in, as are the
learned words of a model handed in with an embedding manager (training grids, compare_embeddings).
SDXL's size conditioning says the generated size: original = target = (height, width), crop (0, 0).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from ldm.devices import choose_device, choose_dtype
from ldm.errors import ConfigError
from ldm.image_size import resolve_size
from ldm.image_utils import pil_to_tensor, tensor_to_pil
from ldm.model_loading import load_model_from_config
from ldm.models.diffusion.sample import check_steps, img2img_steps, sample_latents, sampler_step_count
from ldm.models.diffusion.sampling import get_sampler
from ldm.validate import finite_float, int_in_range

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "stable-diffusion" / "v1-inference.yaml"
LATENT_FACTOR = 8  # the SD VAE downsamples by 8
PathLike = str | Path


# Sampling memory grows with the square of the pixel count (attention over latent pixels): 4096 px is 16x
# SD's 1024 px practical limit already; beyond it a run would take minutes and then fail on memory.
MAX_SIDE = 4096
MAX_BATCH_PIXELS = 64 * 512 * 512  # pixels denoised together: 64 images of 512x512, 16 of 1024x1024, 1 of 4096
MAX_ITERATIONS = 10_000  # batches per call
MAX_CFG_SCALE = 100.0
SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch.Generator.manual_seed takes, with room for seed + i


def check_size(width: int, height: int, names: tuple[str, str] = ("width", "height")) -> None:
    """Whole multiples of 8 from 8 to MAX_SIDE px; `names` are what the user typed (e.g. "--W", "--H")."""
    for name, value in zip(names, (width, height)):
        value = int_in_range(name, value, None, None)
        if value > MAX_SIDE:
            raise ConfigError(
                f"{name} {value}: larger than {MAX_SIDE} px, which would not fit in memory "
                f"(sampling memory grows with the square of the pixel count); use at most {MAX_SIDE}, e.g. 512"
            )
        if value < LATENT_FACTOR or value % LATENT_FACTOR:
            lower = max(LATENT_FACTOR, value - value % LATENT_FACTOR)
            raise ConfigError(f"{name} {value} is not a multiple of 8; use {lower} or {lower + LATENT_FACTOR}")


def check_batch(batch_size: int, width: int, height: int, name: str = "batch size") -> int:
    """Images per batch: at least 1, and no more pixels at once than MAX_BATCH_PIXELS (memory)."""
    batch_size = int_in_range(name, batch_size, 1, None)
    most = max(1, MAX_BATCH_PIXELS // (int(width) * int(height)))
    if batch_size > most:
        raise ConfigError(
            f"{name} {batch_size}: more than {most} images of {width}x{height} px at once, which would not fit "
            f"in memory; use at most {most} per batch and more batches"
        )
    return batch_size


def check_numbers(
    iterations: int, batch_size: int, cfg_scale: float, ddim_eta: float, seed: int | None, width: int, height: int
) -> tuple[int, int, float, float, int | None]:
    """Counts and floats of one generate call, checked (finite, in range) before any work; returned as numbers.
    `width` and `height` must have passed check_size."""
    return (
        int_in_range("iterations", iterations, 1, MAX_ITERATIONS),
        check_batch(batch_size, width, height),
        finite_float("cfg_scale", cfg_scale, 0, MAX_CFG_SCALE),
        finite_float("ddim_eta", ddim_eta, 0, 1),
        None if seed is None else int_in_range("seed", seed, *SEED_RANGE),
    )


def random_seed() -> int:
    return random.randrange(0, 2**32 - 1)


def load_init_image(init_img: PathLike | Image.Image, width: int, height: int) -> Image.Image:
    if isinstance(init_img, Image.Image):
        image = init_img
    else:
        path = Path(init_img).expanduser()
        if not path.is_file():
            raise ConfigError(f"init image {path} not found; pass -I with an existing image file")
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"init image {path} cannot be read ({exc}); pass a PNG or JPEG") from None
    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), Image.LANCZOS)


class Generate:
    """Load once, generate many times. `model` may be passed in already built (tests, training callbacks)."""

    def __init__(
        self,
        config: PathLike = DEFAULT_CONFIG,
        weights: PathLike | None = None,
        device: str | None = None,
        precision: str = "auto",
        sampler_name: str = "k_lms",
        model: torch.nn.Module | None = None,
        use_ema: bool | None = None,
        embedding_paths: Sequence[PathLike] = (),
        embedding_directory: PathLike | None = None,
    ):
        self.config, self.weights, self.use_ema = config, weights, use_ema
        self.device = choose_device(device)
        self.dtype = choose_dtype(precision, self.device)
        get_sampler(sampler_name)  # fail now, not after a minute of loading
        self.sampler_name = sampler_name
        self.model = model
        self.embedding_paths, self.embedding_directory = list(embedding_paths), embedding_directory
        self._conditioner = None

    # -- loading ---------------------------------------------------------------------------------------
    def load_model(self) -> torch.nn.Module:
        if self.model is None:
            if self.weights is None:
                raise ConfigError(
                    "no weights given; pass --ckpt/--weights with an SD 1.x/2.x .ckpt, .safetensors "
                    "or diffusers model folder"
                )
            log.info("loading %s with %s", self.weights, self.config)
            self.model = load_model_from_config(
                self.config,
                self.weights,
                use_ema=self.use_ema,
                device=self.device,
                dtype=self.dtype,
                with_embedding_manager=False,
            )
        return self.model

    @property
    def conditioner(self):
        """The conditioner with the embedding library (built on first use, re-scanned on each call); the
        model's own learned words, if it has an embedding manager, are terms too."""
        if self._conditioner is None:
            from ldm.embeddings.library import EmbeddingLibrary
            from ldm.prompts.conditioner import Conditioner

            model = self.load_model()
            widths = [int(e.width) for e in model.text_encoders]  # SDXL: where a term splits (clip_l, clip_g)
            parts = {"part_widths": widths} if len(widths) > 1 else {}
            library = EmbeddingLibrary(model.text_width, self.embedding_paths, self.embedding_directory, **parts)
            self._conditioner = Conditioner(model, library)
        return self._conditioner

    @property
    def library(self):
        return self.conditioner.library

    @torch.no_grad()
    def conditioning(self, prompts: list[str], size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Prompts -> what the samplers take: {"crossattn": context} and, for SDXL, "vector" with the size
        conditioning of an image of `size` (height, width) (None: the model's default size)."""
        conditioner = self.conditioner
        conditioner.library.refresh()  # pick up files dropped into the embeddings folder
        if size is None:
            width, height = resolve_size(None, None, self.config)
            size = (height, width)
        return conditioner(prompts, target_size=size)

    def step_count(
        self, steps: int, sampler_name: str | None = None, karras: bool = False, strength: float | None = None
    ) -> int:
        """Steps the sampler will actually run (for progress bars)."""
        total = sampler_step_count(self.load_model(), sampler_name or self.sampler_name, steps, karras)
        return total if strength is None else img2img_steps(total, strength)

    # -- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def prompt2image(
        self,
        prompt: str,
        iterations: int = 1,
        steps: int = 50,
        seed: int | None = None,
        cfg_scale: float = 7.5,
        ddim_eta: float = 0.0,
        width: int | None = None,
        height: int | None = None,
        sampler_name: str | None = None,
        init_img: PathLike | Image.Image | None = None,
        strength: float = 0.75,
        negative_prompt: str = "",
        batch_size: int = 1,
        karras: bool = False,
        image_callback: Callable[[Image.Image, int], None] | None = None,
        step_callback: Callable[[dict], None] | None = None,
    ) -> list[tuple[Image.Image, int]]:
        """`iterations` batches of `batch_size` images; batch i uses seed + i. Returns [(image, seed), ...].

        With `init_img`, img2img: the image is encoded and `round(strength x steps)` steps re-denoise it.
        """
        width, height = resolve_size(width, height, self.config)  # unset: the model's size (512 or 768)
        check_size(width, height)
        check_steps(steps)
        iterations, batch_size, cfg_scale, ddim_eta, seed = check_numbers(
            iterations, batch_size, cfg_scale, ddim_eta, seed, width, height
        )
        sampler = sampler_name or self.sampler_name
        get_sampler(sampler)
        init = load_init_image(init_img, width, height) if init_img is not None else None
        if init is not None:
            strength = finite_float("strength", strength, 0, 1, lo_open=True)
        model = self.load_model()
        seed = random_seed() if seed is None else seed
        if cfg_scale != 1.0:  # one call: prompts of different chunk counts are padded with empty chunks
            both = self.conditioning([prompt] * batch_size + [negative_prompt] * batch_size, (height, width))
            cond, uncond = {k: v[:batch_size] for k, v in both.items()}, {k: v[batch_size:] for k, v in both.items()}
        else:
            cond, uncond = self.conditioning([prompt] * batch_size, (height, width)), None
        shape = (
            batch_size,
            model.latent_channels,
            height // model.latent_factor,
            width // model.latent_factor,
        )
        results: list[tuple[Image.Image, int]] = []
        for i in range(iterations):
            generator = torch.Generator("cpu").manual_seed(seed + i)
            init_latent = self._encode_init(init, generator) if init is not None else None
            z = sample_latents(
                model,
                cond,
                uncond,
                shape=shape,
                generator=generator,
                sampler=sampler,
                steps=steps,
                cfg_scale=cfg_scale,
                eta=ddim_eta,
                karras=karras,
                callback=step_callback,
                init_latent=init_latent,
                strength=strength if init is not None else 1.0,
            )
            for image in tensor_to_pil(model.decode_first_stage(z)):
                results.append((image, seed + i))
                if image_callback is not None:
                    image_callback(image, seed + i)
        return results

    def _encode_init(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        model = self.model
        x = pil_to_tensor(image).to(model.device)
        return model.get_first_stage_encoding(model.encode_first_stage(x), generator).float()

    def txt2img(self, prompt: str, **kwargs) -> list[tuple[Image.Image, int]]:
        kwargs.pop("init_img", None)
        return self.prompt2image(prompt, **kwargs)

    def img2img(
        self, prompt: str, init_img: PathLike | Image.Image, strength: float = 0.75, **kwargs
    ) -> list[tuple[Image.Image, int]]:
        return self.prompt2image(prompt, init_img=init_img, strength=strength, **kwargs)
