"""The placeholders of an EmbeddingManager as prompt terms, and the checks their strings must pass.

A `LearnedTerm` is a live view of one placeholder: its `vectors` are the manager's trainable parameter
(with progressive_words, only the active rows), read at every use. So the conditioner treats a word
being trained exactly like a term loaded from a file, and gradients flow from the context to the
parameter through the slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ldm.errors import ConfigError


class LearnedTerm:
    """Placeholder `index` of `manager`, looked up live (a load may replace the parameter or its length)."""

    def __init__(self, manager: Any, index: int):
        self.manager = manager
        self.index = index

    @property
    def name(self) -> str:
        return self.manager.placeholders[self.index]

    @property
    def parameter(self) -> torch.nn.Parameter:
        """The whole trainable parameter [n, dim] (a stable object to key caches on)."""
        return self.manager.learned[self.index]

    @property
    def num_vectors(self) -> int:
        return self.manager.num_active(self.index)

    @property
    def part_widths(self) -> tuple[int, ...] | None:
        """Each text encoder's share of the width for SDXL (as LoadedEmbedding.part_widths), else None."""
        return self.manager.part_widths

    @property
    def vectors(self) -> torch.Tensor:
        """The active vectors [num_vectors, dim], a slice of the parameter (gradients reach it)."""
        return self.parameter[: self.num_vectors]


def tokenize_placeholders(tokenizer: Any, strings: Sequence[str]) -> list[list[int]]:
    """Each placeholder's token ids (no BOS/EOS), after checking that each has tokens and no two are the
    same tokens. One placeholder may contain another ("<cat>" and "cat"): matching is longest first."""
    strings = list(strings)
    sequences = (
        [list(ids) for ids in tokenizer(strings, add_special_tokens=False, verbose=False)["input_ids"]]
        if strings
        else []
    )
    seen: dict[tuple[int, ...], str] = {}
    for s, seq in zip(strings, sequences):
        if not seq:
            raise ConfigError(f"placeholder {s!r} is empty (no tokens); use e.g. '*' or '<my-cat>'")
        if tuple(seq) in seen:
            raise ConfigError(
                f"placeholders {seen[tuple(seq)]!r} and {s!r} are the same tokens {seq}; "
                "give each placeholder a distinct string"
            )
        seen[tuple(seq)] = s
    return sequences
