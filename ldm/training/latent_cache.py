"""Latents of the training images, encoded once per (image, flip) instead of through the VAE every step.

`latent_sampling`: "once" draws z from the posterior once (seeded) and reuses it, "deterministic" uses
the posterior mean, "random" draws a fresh z every step from the cached mean/std.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import torch

from ldm.errors import ConfigError
from ldm.training.step_rng import mix_seed

MODES = ("once", "deterministic", "random")


class LatentCache:
    def __init__(self, mode: str = "once", seed: int = 0):
        if mode not in MODES:
            raise ConfigError(f"latent_sampling {mode!r} is unknown; choose one of: {', '.join(MODES)}")
        self.mode, self.seed = mode, seed
        self._store: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def _moments(self, key: Hashable, image: torch.Tensor, encode: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._store:
            with torch.no_grad():
                posterior = encode(image[None])
            mean, std = posterior.mean[0].float(), posterior.std[0].float()
            if self.mode == "once":  # fix the draw now; the cache then holds z itself
                g = torch.Generator("cpu").manual_seed(mix_seed(self.seed, *_key_ints(key)))
                mean = mean + std * torch.randn(mean.shape, generator=g).to(mean.device)
                std = torch.zeros_like(std)
            elif self.mode == "deterministic":
                std = torch.zeros_like(std)
            self._store[key] = (mean, std)
        return self._store[key]

    def prefill(self, items: Iterable[tuple[Hashable, torch.Tensor]], encode: Callable) -> int:
        """Encode the (key, image [C, H, W]) pairs not cached yet, one at a time as `get` would; how many."""
        before = len(self._store)
        for key, image in items:
            self._moments(key, image, encode)
        return len(self._store) - before

    def get(
        self, keys: list[Hashable], images: torch.Tensor, encode: Callable, generator: torch.Generator
    ) -> torch.Tensor:
        """Unscaled latents [B, C, h, w] for a batch; only unseen keys run the encoder."""
        moments = [self._moments(k, img, encode) for k, img in zip(keys, images)]
        mean = torch.stack([m for m, _ in moments])
        std = torch.stack([s for _, s in moments])
        if self.mode != "random":
            return mean
        return mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)


def _key_ints(key: Hashable) -> tuple[int, ...]:
    return tuple(int(x) for x in key) if isinstance(key, tuple) else (hash(key) & 0xFFFF_FFFF,)
