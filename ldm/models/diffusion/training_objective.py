"""The shape of what LatentDiffusion's Lightning training hooks call.

The model knows only this protocol; ldm.training implements it (TextualInversionObjective) and attaches one
before fit (ldm.training.attach), so the model code never imports the training code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch


class TrainingObjective(Protocol):
    def prepare_networks(self) -> None:
        """Once, at setup("fit"): precision, memory format, checkpointing; check that only the vectors train."""

    def prefill_latents(self, dataset: Any, samples: int) -> int:
        """At the start of training: encode the latents up front; returns how many were encoded."""

    def __call__(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss and its named parts (for logging)."""

    def configure_optimizers(self, lr: float, max_steps: int) -> dict:
        """The optimizer and learning-rate scheduler in Lightning's dict form."""
