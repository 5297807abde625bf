"""The roofline figures of scripts/benchmark.py: FLOPs counted for a step, the machine's matmul rate, and
the arithmetic that turns them into a floor and a fraction of peak."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from sd_helpers import ROOT

from ldm.benchmark.roofline import matmul_peak, roofline, step_flops
from ldm.benchmark.run import roofline_summary

SCRIPT = ROOT / "scripts" / "benchmark.py"


def test_a_frozen_linear_step_counts_its_forward_and_its_backward_to_the_input():
    m, k, n = 8, 16, 32
    weight = torch.randn(n, k)  # frozen, as the networks are: no weight gradient is computed
    x = torch.randn(m, k, requires_grad=True)

    def step() -> None:
        (x @ weight.t()).sum().backward()

    flops = step_flops(step)
    assert flops["total"] == 2 * (2 * m * k * n)
    assert flops["mm"] == flops["total"]


def test_a_trained_weight_adds_its_gradient_product():
    weight = torch.randn(32, 16, requires_grad=True)
    x = torch.randn(8, 16, requires_grad=True)
    flops = step_flops(lambda: (x @ weight.t()).sum().backward())
    assert flops["total"] == 3 * (2 * 8 * 16 * 32)


def test_matmul_peak_is_a_plausible_rate():
    rate = matmul_peak(torch.float32, size=128, reps=3)
    assert 1e6 < rate < 1e15


def test_roofline_arithmetic():
    r = roofline([1.0, 3.0, 2.0], flops=4e9, peak_flops=8e9)
    assert r == {
        "step_s": 2.0,
        "gflop_per_step": 4.0,
        "peak_gflops": 8.0,
        "achieved_gflops": 2.0,
        "fraction_of_peak": 0.25,
        "floor_s": 0.5,
    }


def test_summary_takes_the_median_round():
    rounds = [{**roofline([t], 4e9, p), "gflop_by_op": {"total": 4.0}} for t, p in ((1.0, 8e9), (4.0, 6e9), (2.0, 7e9))]
    s = roofline_summary(rounds)
    assert s["step_s"] == 2.0 and s["peak_gflops"] == 7.0 and s["gflop_by_op"] == {"total": 4.0}
    assert len(s["rounds"]) == 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "--against", "roofline"], "--against roofline is a training baseline"),
        (["train", "--against", "roofline", "--model", "sdxl", "--ckpt", "x.safetensors"], "drop --ckpt"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
