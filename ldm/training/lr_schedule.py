"""Learning-rate schedules for the embedding vectors: constant, the A1111 schedule string, warmup+cosine.

Every schedule is a pure function of the optimizer step, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ldm.errors import ConfigError

Schedule = Callable[[int], float]
# Above this no embedding trains (the vectors blow up within steps); far above it AdamW overflows float32.
MAX_LR = 1000.0
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_a1111_schedule(text: str) -> list[tuple[float, int | None]]:
    """'0.005:100, 1e-3:1000, 1e-5' -> [(0.005, 100), (0.001, 1000), (1e-05, None)]: lr until that step."""
    pieces = [p.strip() for p in str(text).split(",") if p.strip()]
    if not pieces:
        raise ConfigError(f"learning rate schedule {text!r} is empty; write e.g. '0.005:100, 1e-3:1000, 1e-5'")
    out: list[tuple[float, int | None]] = []
    for i, piece in enumerate(pieces):
        m = re.fullmatch(rf"({_NUMBER})\s*(?::\s*(\d+))?", piece)
        if not m:
            raise ConfigError(
                f"learning rate schedule {text!r}: cannot read {piece!r}; write 'lr:until_step' pairs "
                "separated by commas, e.g. '0.005:100, 1e-3:1000, 1e-5'"
            )
        lr, until = float(m.group(1)), (int(m.group(2)) if m.group(2) else None)
        if not math.isfinite(lr) or not 0 < lr <= MAX_LR:  # '1e999' reads as inf
            raise ConfigError(
                f"learning rate schedule {text!r}: learning rate {m.group(1)} must be a positive number "
                f"of at most {MAX_LR:g}"
            )
        if until is None and i != len(pieces) - 1:
            raise ConfigError(f"learning rate schedule {text!r}: only the last entry may omit ':step'")
        if until is not None and out and out[-1][1] is not None and until <= out[-1][1]:
            raise ConfigError(f"learning rate schedule {text!r}: steps must increase ({until} after {out[-1][1]})")
        out.append((lr, until))
    return out


def a1111_schedule(text: str) -> Schedule:
    entries = parse_a1111_schedule(text)

    def lr_at(step: int) -> float:
        for lr, until in entries:
            if until is None or step < until:
                return lr
        return entries[-1][0]  # past the last bound: keep the last rate

    return lr_at


def warmup_cosine(base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> Schedule:
    if total_steps <= 0:
        raise ConfigError(f"cosine schedule needs max_steps > 0, got {total_steps}")

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))

    return lr_at


def make_schedule(
    kind: str,
    base_lr: float,
    total_steps: int,
    schedule: str | None = None,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """kind: 'constant' | 'a1111' (needs `schedule`) | 'cosine' (warmup + cosine to min_lr)."""
    if kind == "constant":
        return lambda step: base_lr
    if kind == "a1111":
        if not schedule:
            raise ConfigError("lr_schedule a1111 needs a schedule string, e.g. '0.005:100, 1e-3:1000, 1e-5'")
        return a1111_schedule(schedule)
    if kind == "cosine":
        return warmup_cosine(base_lr, warmup_steps, total_steps, min_lr)
    raise ConfigError(f"lr schedule {kind!r} is unknown; choose one of: constant, a1111, cosine")
