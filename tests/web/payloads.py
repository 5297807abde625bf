"""Hostile files for the UI tests: a pickle whose loading would run code (it creates a marker file)."""

from __future__ import annotations

from pathlib import Path

import torch


class MarkerPayload:
    """Unpickling this calls Path.touch(marker): if the marker ever exists, the pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def code_running_embedding(marker: Path) -> bytes:
    """A paper-format .pt (a real torch zip file) whose vectors are the payload."""
    import io

    buffer = io.BytesIO()
    torch.save({"string_to_param": {"*": MarkerPayload(marker)}, "name": "evil"}, buffer)
    return buffer.getvalue()
