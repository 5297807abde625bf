"""A small LRU cache of encoded prompts that can never hand back stale context.

Sampling re-encodes the same prompt and negative prompt for every command and batch, so the text
transformer's output is worth keeping. It changes with the prompts and with every tensor it was computed
from: the terms' vectors (replaced when a file is reloaded or a term swapped, edited in place by optimizer
steps or `copy_`) and the text encoder's weights (moved, cast, loaded in place). The key therefore holds,
for each such tensor, its `id()` and its in-place version counter, and the entry keeps those tensors
alive: an `id()` is only unique while its object lives, so a freed tensor's id could otherwise come back
on a new tensor and match an old entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import torch


def tensor_state(tensor: torch.Tensor) -> tuple:
    """What identifies a tensor's current values, as long as the tensor is kept alive."""
    return (id(tensor), tensor._version, tensor.device, tensor.dtype, tuple(tensor.shape))


class ContextCache:
    """`get(key, tensors)` / `put(key, tensors, value)`: `key` says what was encoded (prompts, term
    widths...), `tensors` are the inputs whose identity and in-place version are part of the key; the value
    is whatever was computed from them (a context, or a (context, pooled) pair)."""

    def __init__(self, size: int = 32):
        self.size = int(size)
        self._entries: OrderedDict[tuple, tuple[Any, Sequence[torch.Tensor]]] = OrderedDict()

    @staticmethod
    def _full_key(key: Hashable, tensors: Sequence[torch.Tensor]) -> tuple:
        return (key, tuple(tensor_state(t) for t in tensors))

    def get(self, key: Hashable, tensors: Sequence[torch.Tensor]) -> Any | None:
        full = self._full_key(key, tensors)
        entry = self._entries.get(full)
        if entry is None:
            return None
        self._entries.move_to_end(full)
        return entry[0]

    def put(self, key: Hashable, tensors: Sequence[torch.Tensor], value: Any) -> None:
        self._entries[self._full_key(key, tensors)] = (value, tuple(tensors))  # the tensors stay alive
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
