"""How far a training step is from this machine's matrix-product rate: the step's arithmetic (counted
by torch's FlopCounterMode) against the best rate of one large matrix product in the same dtype and
threads, measured in the same process. `floor_s` is the step if every operation ran at that rate;
`fraction_of_peak` is how close the real step gets. A speed target below the floor cannot be met by
any implementation of the same arithmetic on this machine; one just above it needs kernels near peak.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_SIZE = 2048  # square, bf16: large enough to run at the kernel's best rate, small enough for a second


def step_flops(step: Callable[[], object]) -> dict[str, float]:
    """Floating-point operations of one call of `step` (forward and backward), total and per aten op."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    by_op = {str(op).removeprefix("aten."): float(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return {"total": float(counter.get_total_flops()), **dict(sorted(by_op.items(), key=lambda kv: -kv[1]))}


def matmul_peak(dtype: torch.dtype, size: int = PEAK_SIZE, reps: int = 10) -> float:
    """FLOP/s of the fastest of `reps` [size, size] x [size, size] products (after two unmeasured ones)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dtype)
    b = torch.randn(size, size, generator=g).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def roofline(step_times_s: list[float], flops: float, peak_flops: float) -> dict[str, float]:
    """The step's median time against the time its arithmetic takes at `peak_flops`."""
    median = statistics.median(step_times_s)
    return {
        "step_s": median,
        "gflop_per_step": flops / 1e9,
        "peak_gflops": peak_flops / 1e9,
        "achieved_gflops": flops / median / 1e9,
        "fraction_of_peak": flops / median / peak_flops,
        "floor_s": flops / peak_flops,
    }
