"""Config keys that the model and the training code must agree on without importing each other."""

from __future__ import annotations

# Training options that the paper's configs put directly under model.params instead of model.params.training:
# LatentDiffusion accepts them without an "unknown key" warning and passes them on; ldm.training parses them.
TRAINING_TOP_LEVEL_KEYS: tuple[str, ...] = ("embedding_reg_weight",)
