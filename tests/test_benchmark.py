"""The benchmark's own machinery: peak-memory sampling, summaries and ratios, and the CLI's input checks.
(The figures themselves come from scripts/benchmark.py runs, recorded in docs/benchmarks.md.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from sd_helpers import ROOT

from ldm.benchmark.memory import PeakMemory, release_memory, rss_bytes
from ldm.benchmark.run import summarise

SCRIPT = ROOT / "scripts" / "benchmark.py"


def test_peak_memory_sees_a_short_lived_allocation():
    release_memory()
    before = rss_bytes()
    with PeakMemory("cpu", interval=0.001) as peak:
        x = torch.ones(64 * 2**20)  # 256 MiB, touched
        x.add_(1)
        import time

        time.sleep(0.05)
        del x
    assert peak.peak - before >= 200 * 2**20, (peak.peak, before)


def _result(median: float, peak: int, process: int, batch: int = 2) -> dict:
    return {"median_s": median, "per_sample_s": median / batch, "peak_bytes": peak, "process_peak_bytes": process}


def test_summary_takes_median_of_runs_and_worst_peaks():
    s = summarise(
        [_result(2.0, 3 * 2**30, 5 * 2**30), _result(4.0, 2 * 2**30, 6 * 2**30), _result(3.0, 1 * 2**30, 4 * 2**30)]
    )
    assert s["median_s"] == 3.0 and s["per_sample_s"] == 1.5 and s["samples_per_s"] == pytest.approx(2 / 3)
    assert s["peak_gib"] == 3.0 and s["process_peak_gib"] == 6.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--resolution", "100"], "--resolution 100"),
        (["sample", "--steps", "0"], "--steps must be at least 1"),
        (["train", "--ckpt", "missing.safetensors"], "--ckpt missing.safetensors does not exist"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--against" in r.stdout
