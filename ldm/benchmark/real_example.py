"""Our `main.py` against diffusers' examples/textual_inversion/textual_inversion.py, each run whole, as a user
runs it: same weights (our checkpoint / the same weights as a diffusers folder), same concept folder,
resolution, batch 1 and precision. Each side runs a short and a long training in fresh processes; the
difference of their wall times over the difference of their steps is the time per step, so loading,
start-up and the final save cancel. Sides alternate within a round, and the order flips each round.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ldm.benchmark.weights import FINETUNE_CONFIG, ROOT
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().parent / "stand_ins" / "launch_example.py"
EXAMPLE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
INIT_WORD = "sculpture"  # v1-finetune.yaml's initializer word; the example is given the same


@dataclass
class Setup:
    example: Path  # diffusers' textual_inversion.py
    folder: Path  # the weights as a diffusers folder (the example's --pretrained_model_name_or_path)
    ckpt: Path  # the same weights as one checkpoint (main.py's --actual_resume)
    concept: Path  # the training images both read
    resolution: int = 256
    precision: str = "bf16"
    threads: int | None = None
    seed: int = 0


def example_command(s: Setup, steps: int, out: Path) -> list[str]:
    """The example's documented command line, with snapshots and checkpoints (every 500 steps) left at
    their defaults: the short runs never reach them. It writes its learned embedding at the end."""
    return [
        sys.executable,
        str(LAUNCHER),
        str(s.example),
        f"--pretrained_model_name_or_path={s.folder}",
        f"--train_data_dir={s.concept}",
        "--learnable_property=object",
        "--placeholder_token=<bench>",
        f"--initializer_token={INIT_WORD}",
        f"--resolution={s.resolution}",
        "--train_batch_size=1",
        "--gradient_accumulation_steps=1",
        f"--max_train_steps={steps}",
        "--learning_rate=5.0e-04",
        "--scale_lr",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        f"--mixed_precision={EXAMPLE_PRECISION[s.precision]}",
        f"--seed={s.seed}",
        f"--output_dir={out}",
    ]


def main_command(s: Setup, steps: int, out: Path) -> list[str]:
    """main.py with the shipped SD v1 config, batch 1 at the same size; its image logger and embedding
    snapshots (every 500 steps) stay at their defaults too. It writes its embedding at the end."""
    size = f"{s.resolution}"
    return [
        sys.executable,
        str(ROOT / "main.py"),
        "--base",
        str(FINETUNE_CONFIG),
        "-t",
        f"--actual_resume={s.ckpt}",
        f"--data_root={s.concept}",
        f"--init_word={INIT_WORD}",
        f"--precision={s.precision}",
        f"--max_steps={steps}",
        f"--seed={s.seed}",
        f"--logdir={out}",
        "data.params.batch_size=1",
        f"data.params.train.params.size={size}",
        f"data.params.validation.params.size={size}",
    ]


def _env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def timed_run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one run, which must succeed. The peak is the process's own VmHWM,
    read while it runs: wait4's ru_maxrss would count this (parent) process's RSS copied at fork."""
    start = time.perf_counter()
    peak = 0
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            peak = max(peak, high_water_rss(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise ConfigError(f"benchmark run timed out after {timeout:.0f} s: {' '.join(cmd[:3])}")
            time.sleep(0.05)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            tail = (err.read().strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"benchmark run {Path(cmd[1]).name} failed ({proc.returncode}): {tail}")
    return wall, peak


def high_water_rss(pid: int) -> int:
    """A live process's peak resident memory (VmHWM) in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def one_run(side: str, s: Setup, steps: int, timeout: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"ti-bench-{side}-"))
    try:
        cmd = (main_command if side == "ours" else example_command)(s, steps, out / "run")
        wall, peak = timed_run(cmd, _env(s.threads), timeout)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    log.info("%s, %d steps: %.1f s", side, steps, wall)
    return {"wall_s": wall, "peak_bytes": peak}


def round_order(r: int) -> list[tuple[str, str]]:
    """(side, length) in the order round `r` runs them: the sides alternate, and the order flips each round."""
    order = [("ours", "short"), ("diffusers", "short"), ("ours", "long"), ("diffusers", "long")]
    return order if r % 2 == 0 else order[::-1]


def per_step(short_s: float, long_s: float, short: int, long: int) -> float:
    return (long_s - short_s) / (long - short)


def compare(s: Setup, rounds: int, short: int = 3, long: int = 9, timeout: float = 3600) -> dict:
    if long <= short:
        raise ConfigError(f"--long_steps {long} must be more than --short_steps {short}")
    runs: list[dict] = []
    for r in range(rounds):
        got = {
            (side, length): one_run(side, s, short if length == "short" else long, timeout)
            for side, length in round_order(r)
        }
        step = {
            side: per_step(got[side, "short"]["wall_s"], got[side, "long"]["wall_s"], short, long)
            for side in ("ours", "diffusers")
        }
        runs.append(
            {
                "round": r + 1,
                "step_s": step,
                "ratio": step["ours"] / step["diffusers"],
                "runs": {f"{k[0]}_{k[1]}": v for k, v in got.items()},
            }
        )
        log.info(
            "round %d: ours %.2f s/step, diffusers %.2f s/step, ratio %.3f",
            r + 1,
            step["ours"],
            step["diffusers"],
            runs[-1]["ratio"],
        )
    return summarise(runs)


def summarise(runs: list[dict]) -> dict:
    sides = {}
    for side in ("ours", "diffusers"):
        steps = [r["step_s"][side] for r in runs]
        peaks = [r["runs"][f"{side}_long"]["peak_bytes"] for r in runs]
        sides[side] = {
            "median_step_s": statistics.median(steps),
            "step_s": steps,
            "process_peak_gib": max(peaks) / 2**30,
        }
    ratios = [r["ratio"] for r in runs]
    return {
        "sides": sides,
        "ratio_median_of_rounds": statistics.median(ratios),
        "ratio_of_medians": sides["ours"]["median_step_s"] / sides["diffusers"]["median_step_s"],
        "ratios": ratios,
        "rounds": runs,
    }


def against_the_example(
    example: str | Path,
    ckpt: str | Path,
    cache: Path,
    resolution: int = 256,
    precision: str = "bf16",
    threads: int | None = None,
    rounds: int = 3,
    short: int = 3,
    long: int = 9,
    timeout: float = 3600,
) -> dict:
    """Prepare both sides' inputs under `cache` (once) and compare; the JSON-ready result."""
    import importlib.util

    from ldm.benchmark.example_inputs import concept_folder, diffusers_folder
    from ldm.benchmark.run import machine

    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("diffusers' example needs accelerate: pip install accelerate (the benchmark's only extra)")
    ckpt = Path(ckpt)
    setup = Setup(
        example=Path(example).resolve(),
        folder=diffusers_folder(ckpt, cache / f"{ckpt.stem}-diffusers"),
        ckpt=ckpt,
        concept=concept_folder(cache / "concept"),
        resolution=resolution,
        precision=precision,
        threads=threads,
    )
    result = compare(setup, rounds, short, long, timeout)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(setup).items()}
    return {
        "task": "train",
        "against": "diffusers example (run whole)",
        "settings": {**settings, "short_steps": short, "long_steps": long, "rounds": rounds},
        "commands": {
            "ours": " ".join(main_command(setup, long, Path("OUT"))),
            "diffusers": " ".join(example_command(setup, long, Path("OUT"))),
        },
        "machine": machine(),
        **result,
    }
