"""Training options of a textual-inversion run (`model.params.training` in the configs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ldm.config_keys import TRAINING_TOP_LEVEL_KEYS
from ldm.errors import ConfigError
from ldm.training.lr_schedule import MAX_LR
from ldm.validate import finite_float, int_in_range

NETWORK_PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "a1111", "cosine")
LATENT_SAMPLING = ("once", "deterministic", "random")
KEY = "model.params.training"  # where the configs keep these options; errors name the full key

if TYPE_CHECKING:
    import torch


def network_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a `training.network_precision` name (one of NETWORK_PRECISIONS)."""
    import torch  # here, not at the top: main.py checks a config without waiting for torch to import

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ConfigError(f"network precision {precision!r} is unknown; choose one of: {', '.join(NETWORK_PRECISIONS)}")
    return dtypes[precision]


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

    TOP_LEVEL_KEYS = TRAINING_TOP_LEVEL_KEYS  # paper configs put these directly under model.params

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
        """Check every value and store it with its proper type (dotlist overrides arrive as strings)."""
        self.network_precision = _choice("network_precision", self.network_precision, NETWORK_PRECISIONS)
        self.lr_schedule = _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.latent_sampling = _choice("latent_sampling", self.latent_sampling, LATENT_SAMPLING)
        self.seed = int_in_range(f"{KEY}.seed", self.seed, -(2**63), 2**64 - 1)  # what torch.manual_seed takes
        self.lr_warmup_steps = int_in_range(f"{KEY}.lr_warmup_steps", self.lr_warmup_steps, 0)
        self.log_every_n_steps = int_in_range(f"{KEY}.log_every_n_steps", self.log_every_n_steps, 1)
        self.min_lr = finite_float(f"{KEY}.min_lr", self.min_lr, 0, MAX_LR)
        self.weight_decay = finite_float(f"{KEY}.weight_decay", self.weight_decay, 0)
        if self.min_snr_gamma is not None:
            self.min_snr_gamma = finite_float(f"{KEY}.min_snr_gamma", self.min_snr_gamma, 0, lo_open=True)
        if self.embedding_reg_weight is not None:
            self.embedding_reg_weight = finite_float(f"{KEY}.embedding_reg_weight", self.embedding_reg_weight, 0)
        self.gradient_checkpointing = _flag("gradient_checkpointing", self.gradient_checkpointing)
        self.channels_last = _flag("channels_last", self.channels_last)
        if self.lr_schedule_string:
            from ldm.training.lr_schedule import parse_a1111_schedule

            self.lr_schedule_string = str(self.lr_schedule_string)
            try:
                parse_a1111_schedule(self.lr_schedule_string)  # fail at start-up, not at step 1
            except ConfigError as exc:
                raise ConfigError(f"{KEY}.lr_schedule_string: {exc}") from None
            self.lr_schedule = "a1111"
        elif self.lr_schedule == "a1111":
            raise ConfigError(
                f"{KEY}.lr_schedule a1111 needs {KEY}.lr_schedule_string, e.g. '0.005:100, 1e-3:1000, 1e-5'"
            )


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{KEY}.{name}={value!r} is unknown; choose one of: {', '.join(choices)}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{KEY}.{name}={value!r} is not true or false")
    return value
