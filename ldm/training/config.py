"""Training options of a textual-inversion run (`model.params.training` in the configs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from ldm.errors import ConfigError

NETWORK_PRECISIONS = ("fp32", "bf16", "fp16")
_NETWORK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def network_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a `training.network_precision` name (one of NETWORK_PRECISIONS)."""
    if precision not in _NETWORK_DTYPES:
        raise ConfigError(f"network precision {precision!r} is unknown; choose one of: {', '.join(NETWORK_PRECISIONS)}")
    return _NETWORK_DTYPES[precision]


@dataclass
class TrainingConfig:
    seed: int = 0  # every step's noise/timesteps derive from (seed, sample index)
    lr_schedule: str = "constant"  # constant | a1111 | cosine
    lr_schedule_string: str | None = None  # A1111 form '0.005:100, 1e-3:1000, 1e-5' (implies a1111)
    lr_warmup_steps: int = 0
    min_lr: float = 0.0
    weight_decay: float = 0.01  # AdamW default, as the paper
    min_snr_gamma: float | None = None
    latent_sampling: str = "once"  # once | deterministic | random
    network_precision: str = "fp32"  # dtype of the frozen networks; the vectors stay fp32
    gradient_checkpointing: bool = False
    channels_last: bool = False  # UNet weights/activations in NHWC (faster convolutions on some hardware)
    embedding_reg_weight: float | None = None  # overrides the embedding manager's when set
    log_every_n_steps: int = 10

    # Paper configs put these directly under model.params.
    TOP_LEVEL_KEYS = ("embedding_reg_weight",)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> TrainingConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"model.params.training has unknown keys: {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        merged = {k: (extra or {})[k] for k in cls.TOP_LEVEL_KEYS if (extra or {}).get(k) is not None}
        merged.update(values)
        config = cls(**merged)
        config.validate()
        return config

    def validate(self) -> None:
        if self.network_precision not in NETWORK_PRECISIONS:
            raise ConfigError(
                f"training.network_precision {self.network_precision!r}; choose one of: {', '.join(NETWORK_PRECISIONS)}"
            )
        if self.lr_schedule_string:
            from ldm.training.lr_schedule import parse_a1111_schedule

            parse_a1111_schedule(self.lr_schedule_string)  # fail at start-up, not at step 1
            self.lr_schedule = "a1111"
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ConfigError(f"training.min_snr_gamma must be positive, got {self.min_snr_gamma}")
