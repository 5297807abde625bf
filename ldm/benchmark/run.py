"""Run benchmark sides in fresh processes, alternating, and summarise them as figures and ratios."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from ldm.errors import ConfigError

log = logging.getLogger(__name__)


def run_side(spec: dict, timeout: int = 3600) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "ldm.benchmark.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"benchmark side {spec['side']!r} failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(results: list[dict]) -> dict:
    median_s = statistics.median(r["median_s"] for r in results)
    batch = results[0]["median_s"] / results[0]["per_sample_s"]
    return {
        "median_s": median_s,
        "per_sample_s": median_s / batch,
        "samples_per_s": batch / median_s,
        "peak_gib": max(r["peak_bytes"] for r in results) / 2**30,
        "process_peak_gib": max(r["process_peak_bytes"] for r in results) / 2**30,
        "runs_median_s": [r["median_s"] for r in results],
    }


def machine() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def benchmark(spec: dict, sides: list[str], rounds: int) -> dict:
    """Each round runs every side once, in an order that alternates between rounds."""
    per_side: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(rounds):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            log.info("round %d/%d: %s", r + 1, rounds, side)
            per_side[side].append(run_side({**spec, "side": side}))
    out = {
        "task": spec["task"],
        "settings": {k: v for k, v in spec.items() if k != "side"},
        "machine": machine(),
        "sides": {s: summarise(v) for s, v in per_side.items()},
    }
    ours = out["sides"].get("ours")
    ratios: dict[str, float | None] = {}
    for other in sides:
        if other != "ours" and ours is not None:
            theirs = out["sides"][other]
            ratios[f"time_ours_vs_{other}"] = ours["median_s"] / theirs["median_s"]
            if other != "floor":
                ratios[f"peak_memory_ours_vs_{other}"] = ours["peak_gib"] / theirs["peak_gib"]
                ratios[f"process_peak_memory_ours_vs_{other}"] = ours["process_peak_gib"] / theirs["process_peak_gib"]
    out["ratios"] = ratios
    if spec.get("roofline"):
        out["roofline"] = roofline_summary([r["roofline"] for r in per_side["ours"]])
    return out


def roofline_summary(rounds: list[dict]) -> dict:
    """The median of each roofline figure over rounds (FLOPs per op from the first: they do not vary)."""
    figures = {k: statistics.median(r[k] for r in rounds) for k, v in rounds[0].items() if isinstance(v, float)}
    return {**figures, "gflop_by_op": rounds[0]["gflop_by_op"], "rounds": rounds}
