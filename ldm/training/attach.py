"""Give a LatentDiffusion its training objective before Trainer.fit: the model keeps the raw `training:` options
of its config, the TrainingConfig is parsed from them here, so the model code never imports ldm.training."""

from __future__ import annotations

from typing import Any

from ldm.training.config import TrainingConfig
from ldm.training.objective import TextualInversionObjective


def training_config(model: Any) -> TrainingConfig:
    """The checked training options of a model built from a config (`model.params.training` and top-level keys)."""
    return TrainingConfig.from_mapping(getattr(model, "training_params", None) or {})


def attach_objective(model: Any, config: TrainingConfig | None = None) -> TextualInversionObjective:
    """Build the textual-inversion objective (from the model's own options unless `config` is given) and attach it
    to the model's Lightning hooks; returns it."""
    objective = TextualInversionObjective(model, config if config is not None else training_config(model))
    model.attach_objective(objective)
    return objective
