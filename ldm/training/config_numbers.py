"""The numbers of a training config, checked before anything is built: whole numbers where counts are meant,
finite floats in range everywhere else, each stored back as a number (dotlist overrides arrive as strings),
and the learning-rate schedule built once, so a bad one fails at start-up rather than at step 1.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ldm.errors import ConfigError
from ldm.training.config import TrainingConfig
from ldm.training.lr_schedule import MAX_LR
from ldm.validate import finite_float, int_in_range


def config_int(config: DictConfig, key: str, default: int, minimum: int = 0) -> int:
    """An integer config value, or a one-line error naming the key (dotlist overrides arrive as strings)."""
    value = OmegaConf.select(config, key, default=default)
    number = int_in_range(key, value, minimum)
    if OmegaConf.select(config, key) is not None:
        OmegaConf.update(config, key, number)  # the model and data read a number, not the override's string
    return number


def validate_numbers(config: DictConfig) -> None:
    """Check the integers the run relies on before anything is built."""
    config_int(config, "data.params.batch_size", 2, minimum=1)
    config_int(config, "data.params.num_workers", 0)
    config_int(config, "lightning.trainer.accumulate_grad_batches", 1, minimum=1)
    config_int(config, "lightning.modelcheckpoint.params.every_n_train_steps", 500)
    config_int(config, "lightning.trainer.max_steps", 1, minimum=1)
    validate_floats(config)


def validate_floats(config: DictConfig) -> None:
    """Every float the run uses, finite and in range, stored back as a number (overrides arrive as strings)."""
    model_p = config.model.params
    config.model.base_learning_rate = finite_float(
        "model.base_learning_rate", config.model.get("base_learning_rate", 5e-3), 0, MAX_LR, lo_open=True
    )
    for key, hi in (("scale_factor", 1e3), ("linear_start", 1), ("linear_end", 1)):  # the betas lie in (0, 1)
        if model_p.get(key) is not None:
            model_p[key] = finite_float(f"model.params.{key}", model_p[key], 0, hi, lo_open=True)
    for key in TrainingConfig.TOP_LEVEL_KEYS:
        if model_p.get(key) is not None:
            model_p[key] = finite_float(f"model.params.{key}", model_p[key], 0)
    trainer = config.lightning.trainer
    if trainer.get("gradient_clip_val") is not None:
        trainer.gradient_clip_val = finite_float("lightning.trainer.gradient_clip_val", trainer.gradient_clip_val, 0)
    training = model_p.get("training") or {}
    if not OmegaConf.is_dict(training):
        raise ConfigError(f"model.params.training must be a mapping of options, got {training!r}")
    checked = TrainingConfig.from_mapping(OmegaConf.to_container(training), extra=model_p)
    for key in training:  # write back the checked, typed values the model will read
        model_p.training[key] = getattr(checked, key)
    _check_schedule(config, checked)


def _check_schedule(config: DictConfig, training: TrainingConfig) -> None:
    from ldm.training.lr_schedule import make_schedule

    base_lr, steps = config.model.base_learning_rate, int(config.lightning.trainer.max_steps)
    make_schedule(
        training.lr_schedule, base_lr, steps, training.lr_schedule_string, training.lr_warmup_steps, training.min_lr
    )
