"""The benchmark's own machinery: peak-memory sampling, summaries and ratios, and the CLI's input checks.
(The figures themselves come from scripts/benchmark.py runs, recorded in docs/benchmarks.md.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_fakes import FAKE_EXAMPLE, FAKE_OURS
from PIL import Image
from sd_helpers import ROOT

from ldm.benchmark import real_example
from ldm.benchmark.memory import PeakMemory, release_memory, rss_bytes
from ldm.benchmark.real_example import LAUNCHER, Setup, example_command, main_command, per_step, round_order
from ldm.benchmark.run import summarise
from ldm.benchmark.step_times import intervals, steady
from ldm.errors import ConfigError

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
        (["train", "--against", "diffusers"], "pass --diffusers_example"),
        (["train", "--diffusers_example", "nowhere/textual_inversion.py"], "--diffusers_example nowhere/"),
        (["train", "--short_steps", "5", "--long_steps", "5"], "--long_steps 5 must be more than --short_steps 5"),
        (["train", "--short_steps", "-1"], "--short_steps -1; use 0 (no short runs) or more"),
        (["train", "--long_steps", "2"], "--long_steps 2 must be more than the 2 warm-up steps"),
        (["sample", "--against", "floor"], "--against floor is a training baseline"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--against" in r.stdout


def test_rounds_alternate_sides_and_flip_their_order():
    first, second = round_order(0), round_order(1)
    assert first == [("ours", "short"), ("diffusers", "short"), ("ours", "long"), ("diffusers", "long")]
    assert second == first[::-1]
    assert round_order(0, short=False) == [("ours", "long"), ("diffusers", "long")]


def test_time_per_step_cancels_start_up():
    start_up, step = 40.0, 2.5
    assert per_step(start_up + 3 * step, start_up + 9 * step, 3, 9) == pytest.approx(step)


def test_both_sides_train_the_same_job(tmp_path):
    setup = Setup(Path("ex/textual_inversion.py"), Path("folder"), Path("sd.safetensors"), Path("concept"), 320, "bf16")
    ours, theirs = main_command(setup, 9, tmp_path), example_command(setup, 9, tmp_path)
    assert {
        "--max_steps=9",
        "--precision=bf16",
        "data.params.batch_size=1",
        "model.params.training.log_every_n_steps=1",
        "data.params.train.params.size=320",
    } <= set(ours)
    assert f"--actual_resume={Path('sd.safetensors')}" in ours and f"--data_root={Path('concept')}" in ours
    assert {"--max_train_steps=9", "--mixed_precision=bf16", "--train_batch_size=1", "--resolution=320"} <= set(theirs)
    assert (
        f"--pretrained_model_name_or_path={Path('folder')}" in theirs
        and f"--train_data_dir={Path('concept')}" in theirs
    )
    assert theirs[1] == str(LAUNCHER) and theirs[2] == str(Path("ex/textual_inversion.py"))


def test_compare_measures_each_side_from_real_processes(monkeypatch, tmp_path):
    """Fake trainings that take 0.2 s (ours) and 0.4 s (theirs) per step after a start-up."""
    monkeypatch.setattr(
        real_example,
        "main_command",
        lambda s, steps, out, root: [sys.executable, "-c", FAKE_OURS, str(steps), "0.2", str(out)],
    )
    monkeypatch.setattr(
        real_example, "example_command", lambda s, steps, out: [sys.executable, "-c", FAKE_EXAMPLE, str(steps), "0.4"]
    )
    setup = Setup(tmp_path, tmp_path, tmp_path, tmp_path)
    result = real_example.compare(setup, rounds=2, short=1, long=4, timeout=120)
    assert len(result["rounds"]) == 2
    # sleeping processes: each estimate is exact up to process start-up jitter, and burns no CPU
    ours, theirs = result["sides"]["ours"], result["sides"]["diffusers"]
    assert ours["step_in_run_s"]["median"] == pytest.approx(0.2, abs=0.05)
    assert theirs["step_in_run_s"]["median"] == pytest.approx(0.4, abs=0.05)
    assert result["ratios"]["ours_vs_diffusers_in_run_s"]["median"] == pytest.approx(0.5, abs=0.1)
    assert ours["step_wall_s"]["median"] == pytest.approx(0.2, abs=0.1)
    assert theirs["step_wall_s"]["median"] == pytest.approx(0.4, abs=0.1)
    assert len(result["ratios"]["ours_vs_diffusers_wall_s"]["rounds"]) == 2
    assert abs(ours["step_cpu_s"]["median"]) < 0.1
    assert ours["process_peak_gib"] > 0 and result["ratios"]["ours_vs_diffusers_peak"] > 0


def test_without_short_runs_only_the_in_run_step_is_measured(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(
        real_example,
        "one_run",
        lambda side, s, steps, timeout: ran.append((side, steps)) or {"step_s": 1.0, "wall_s": 9, "peak_bytes": 1},
    )
    result = real_example.compare(Setup(tmp_path, tmp_path, tmp_path, tmp_path), rounds=1, short=0, long=5)
    assert sorted(ran) == [("diffusers", 5), ("ours", 5)]
    assert set(result["ratios"]) == {"ours_vs_diffusers_in_run_s", "ours_vs_diffusers_peak"}


def test_a_run_that_reports_too_few_steps_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(
        real_example, "example_command", lambda s, steps, out: [sys.executable, "-c", FAKE_EXAMPLE, "2", "0.01"]
    )
    with pytest.raises(ConfigError, match="reported 2 step times for 4 steps"):
        real_example.one_run("diffusers", Setup(tmp_path, tmp_path, tmp_path, tmp_path), 4, timeout=60)


def test_the_example_bar_is_read_as_it_is_written():
    """The real tqdm, writing to a pipe as in the example: one time per count, steps 0.15 s apart."""
    got = real_example.timed_run([sys.executable, "-c", FAKE_EXAMPLE, "5", "0.15"], {}, timeout=60)
    assert len(got["steps_s"]) == 5
    assert all(t == pytest.approx(0.15, abs=0.05) for t in got["steps_s"]), got["steps_s"]


def test_a_steady_step_leaves_the_warm_up_out():
    assert steady([5.0, 3.0, 1.0, 2.0, 1.5]) == 1.5
    assert steady([5.0, 3.0]) is None
    assert intervals({0: 1.0, 1: 3.0, 2: 4.0, 4: 9.0}) == [2.0, 1.0]  # a count never seen splits no step


def test_cpu_time_counts_work_not_waiting():
    busy = [sys.executable, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 0.5: pass"]
    idle = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    assert real_example.timed_run(busy, {}, 60)["cpu_s"] >= 0.45
    assert real_example.timed_run(idle, {}, 60)["cpu_s"] < 0.3


def test_a_failing_run_is_one_line_naming_it(tmp_path):
    cmd = [sys.executable, "-c", "import sys; sys.exit('example: something broke')"]
    with pytest.raises(ConfigError, match="failed .*something broke"):
        real_example.timed_run(cmd, {}, timeout=60)


def test_stand_in_flip_draws_from_torch_like_torchvision():
    sys.path.insert(0, str(LAUNCHER.parent / "lib"))
    try:
        from torchvision.transforms import RandomHorizontalFlip
    finally:
        sys.path.pop(0)
        sys.modules.pop("torchvision", None)
        sys.modules.pop("torchvision.transforms", None)
    image = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    assert np.array_equal(np.array(RandomHorizontalFlip(p=1.0)(image)), np.array(image)[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(image) is image
    torch.manual_seed(3)
    flips = [RandomHorizontalFlip(p=0.5)(image) is not image for _ in range(32)]
    torch.manual_seed(3)
    assert flips == [bool(torch.rand(1) < 0.5) for _ in range(32)]


def test_launcher_hides_the_stand_in_from_the_libraries(tmp_path):
    """The example sees the stand-in; transformers and diffusers still find no torchvision."""
    example = tmp_path / "example.py"
    example.write_text(
        "import sys\n"
        "from torchvision import transforms\n"
        "import transformers.utils.import_utils as t\n"
        "import diffusers.utils.import_utils as d\n"
        "print(transforms.RandomHorizontalFlip.__name__, t.is_torchvision_available(), d.is_torchvision_available(),"
        " sys.argv[1:], sys.path[0])\n"
    )
    r = subprocess.run(
        [sys.executable, str(LAUNCHER), str(example), "--flag", "x"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["RandomHorizontalFlip", "False", "False", "['--flag',", "'x']", str(tmp_path)]


def test_a_run_past_its_timeout_is_killed_and_named(tmp_path):
    pid_file = tmp_path / "pid"
    cmd = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)",
    ]
    with pytest.raises(ConfigError, match="timed out after 3 s"):
        real_example.timed_run(cmd, {}, timeout=3)
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(int(pid_file.read_text()), 0)
