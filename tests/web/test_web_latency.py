"""scripts/benchmark.py web: the percentile it reports, and one small idle run against the real server."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from ldm.benchmark.web_latency import PAGES, percentile, web_latency
from ldm.benchmark.web_server import WebServer, toy_project
from ldm.errors import ConfigError


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    random.Random(0).shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 100) == 100
    assert percentile([3.0], 95) == 3.0


def test_idle_run_measures_every_page_of_the_real_server():
    result = web_latency(concurrency=3, rounds=2, train=False)
    assert result["training"] is None
    assert set(result["pages"]) == set(PAGES)
    for figures in result["pages"].values():
        assert figures["requests"] == 6
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]


def test_bad_counts_are_refused_in_one_line():
    script = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
    done = subprocess.run(
        [sys.executable, str(script), "web", "--concurrency", "0"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --concurrency must be at least 1"


def test_a_server_that_cannot_start_is_one_line_naming_why(tmp_path):
    """--host 0.0.0.0 without --auth is refused by the server itself; the benchmark says so in one line."""
    server = WebServer(toy_project(tmp_path / "project"), extra_args=("--host", "0.0.0.0"))
    with pytest.raises(ConfigError) as refused:
        server.start(timeout=300)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("the web server exited with 2; its log ends: error:")
    assert "--auth" in message
