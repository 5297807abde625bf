"""Our `main.py` against diffusers' examples/textual_inversion/textual_inversion.py (SD v1) or
textual_inversion_sdxl.py (SDXL), each run whole, as a user runs it: same weights (our checkpoint / the
same weights as a diffusers folder), same concept folder, resolution, batch 1 and precision. Each side
trains in fresh processes; its time per step is read inside the run (step_times.py), so loading, start-up
and the final save stay out. Optional short runs give (long - short) wall and CPU time over the steps
between them as a cross-check. Sides alternate within a round, and the order flips each round.
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

from ldm.benchmark.step_times import ProgressWatch, main_step_times, steady
from ldm.benchmark.weights import FINETUNE_CONFIGS, ROOT
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().parent / "stand_ins" / "launch_example.py"
EXAMPLE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
INIT_WORD = "sculpture"  # v1-finetune.yaml's initializer word; the example is given the same
SIDES = ("ours", "diffusers")
WARMUP_STEPS = 2  # left out of the in-run step time: first calls allocate and warm caches


@dataclass
class Setup:
    example: Path  # diffusers' textual_inversion.py (sd1) or textual_inversion_sdxl.py (sdxl)
    folder: Path  # the weights as a diffusers folder (the example's --pretrained_model_name_or_path)
    ckpt: Path  # the same weights as one checkpoint (main.py's --actual_resume)
    concept: Path  # the training images both read
    resolution: int = 256
    precision: str = "bf16"
    threads: int | None = None
    seed: int = 0
    before: Path | None = None  # another checkout whose main.py runs as a third side ("before")
    model: str = "sd1"  # "sd1" or "sdxl": which finetune config main.py runs


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


def main_command(s: Setup, steps: int, out: Path, root: Path = ROOT) -> list[str]:
    """main.py with the shipped finetune config of the model family, batch 1 at the same size; its image
    logger and embedding snapshots (every 500 steps) stay at their defaults too. It writes its embedding at
    the end. Metrics are written every step (default 10) so that each step's time is read."""
    size = f"{s.resolution}"
    return [
        sys.executable,
        str(root / "main.py"),
        "--base",
        str(root / FINETUNE_CONFIGS[s.model].relative_to(ROOT)),
        "-t",
        f"--actual_resume={s.ckpt}",
        f"--data_root={s.concept}",
        f"--init_word={INIT_WORD}",
        f"--precision={s.precision}",
        f"--max_steps={steps}",
        f"--seed={s.seed}",
        f"--logdir={out}",
        "data.params.batch_size=1",
        "model.params.training.log_every_n_steps=1",  # every step's time/step_s reaches the metrics CSV
        f"data.params.train.params.size={size}",
        *_validation_size(s.model, size),
    ]


def _validation_size(model: str, size: str) -> list[str]:
    """The SD v1 config validates on the same concept; the SDXL config has no validation set to resize."""
    return [f"data.params.validation.params.size={size}"] if model == "sd1" else []


def _env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def timed_run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path = ROOT) -> dict:
    """Wall seconds, CPU seconds (user + system, its finished children included) and peak RSS of one run,
    which must succeed, and the step times its progress bar showed (the example's; ours are read from its
    metrics). The peak is the process's own VmHWM, read while it runs: wait4's ru_maxrss would also count
    this (parent) process's RSS, copied at fork."""
    start = time.perf_counter()
    peak = 0
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = ProgressWatch(proc.stderr)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, high_water_rss(proc.pid))
            if time.monotonic() > deadline:
                raise ConfigError(f"benchmark run timed out after {timeout:.0f} s: {' '.join(cmd[:3])}")
            time.sleep(0.05)
    except BaseException:  # a timeout or Ctrl-C: no training run is left behind
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    wall = time.perf_counter() - start
    watch.join()
    proc.stderr.close()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = watch.tail[-1] if watch.tail else "no output"
        raise ConfigError(f"benchmark run {Path(cmd[1]).name} failed ({code}): {tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_bytes": peak, "steps_s": watch.step_times()}


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
        root = s.before if side == "before" else ROOT  # "before": main.py of another checkout
        if side == "diffusers":
            cmd = example_command(s, steps, out / "run")
        else:
            cmd = main_command(s, steps, out / "run", root)
        got = timed_run(cmd, _env(s.threads), timeout, cwd=root)
        if side != "diffusers":
            got["steps_s"] = main_step_times(out / "run")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if len(got["steps_s"]) != steps:
        hint = "; --before needs a checkout whose main.py logs time/step_s" if side == "before" else ""
        raise ConfigError(f"benchmark run {side} reported {len(got['steps_s'])} step times for {steps} steps{hint}")
    got["step_s"] = steady(got["steps_s"], WARMUP_STEPS)
    log.info(
        "%s, %d steps: %.1f s wall, %.1f s CPU, steady step %s s",
        side,
        steps,
        got["wall_s"],
        got["cpu_s"],
        got["step_s"],
    )
    return got


def round_order(r: int, sides: tuple[str, ...] = ("ours", "diffusers"), short: bool = True) -> list[tuple[str, str]]:
    """(side, length) in the order round `r` runs them: the sides alternate, and the order flips each round."""
    lengths = ("short", "long") if short else ("long",)
    order = [(side, length) for length in lengths for side in sides]
    return order if r % 2 == 0 else order[::-1]


def per_step(short_s: float, long_s: float, short: int, long: int) -> float:
    return (long_s - short_s) / (long - short)


def _ratios(step: dict[str, float], sides: tuple[str, ...]) -> dict[str, float]:
    return {side: step[side] / step["diffusers"] for side in sides if side != "diffusers"}


def _round_steps(got: dict, sides: tuple[str, ...], short: int, long: int) -> dict[str, dict[str, float]]:
    """{clock: {side: s/step}} of one round: in the long run, and (with short runs) by difference."""
    steps = {"in_run_s": {side: got[side, "long"]["step_s"] for side in sides}}
    if short:
        for clock in ("wall_s", "cpu_s"):
            steps[clock] = {
                side: per_step(got[side, "short"][clock], got[side, "long"][clock], short, long) for side in sides
            }
    return steps


def check_lengths(short: int, long: int) -> None:
    """Run lengths that give a step time: short runs 0 (none) or fewer steps than the long run, which must
    have steps left after the warm-up ones."""
    if short < 0:
        raise ConfigError(f"--short_steps {short}; use 0 (no short runs) or more")
    if long <= short:
        raise ConfigError(f"--long_steps {long} must be more than --short_steps {short}")
    if long <= WARMUP_STEPS:
        raise ConfigError(f"--long_steps {long} must be more than the {WARMUP_STEPS} warm-up steps")


def compare(
    s: Setup, rounds: int, short: int = 0, long: int = 12, timeout: float = 3600, sides: tuple[str, ...] = SIDES
) -> dict:
    """Time per step and peaks of `sides` (a subset of ours/diffusers: one side alone fits a smaller machine;
    ratios need both), plus "before" when the setup names another checkout. The headline is the step time
    read inside each long run; with short > 0, (long - short) wall and CPU time over the steps between
    them is kept as a cross-check."""
    check_lengths(short, long)
    sides = (*sides, "before") if s.before else tuple(sides)
    runs: list[dict] = []
    for r in range(rounds):
        got = {
            (side, length): one_run(side, s, short if length == "short" else long, timeout)
            for side, length in round_order(r, sides, short=short > 0)
        }
        one = {"round": r + 1, "runs": {f"{k[0]}_{k[1]}": v for k, v in got.items()}}
        for clock, step in _round_steps(got, sides, short, long).items():
            one[f"step_{clock}"] = step
            if "diffusers" in sides:
                one[f"ratio_{clock}"] = _ratios(step, sides)
        runs.append(one)
        log.info("round %d: s/step %s", r + 1, {k: v for k, v in one.items() if k.startswith("step_")})
    return summarise(runs, sides)


def summarise(runs: list[dict], sides: tuple[str, ...] = ("ours", "diffusers")) -> dict:
    """Medians over rounds of each side's time per step (in the run; wall and CPU differences when short runs
    ran), and of the ratios taken within a round."""
    out: dict = {"sides": {}, "ratios": {}, "rounds": runs}
    clocks = [c for c in ("in_run_s", "wall_s", "cpu_s") if f"step_{c}" in runs[0]]
    for side in sides:
        out["sides"][side] = {
            "process_peak_gib": max(r["runs"][f"{side}_long"]["peak_bytes"] for r in runs) / 2**30,
            "long_run_wall_s": statistics.median(r["runs"][f"{side}_long"]["wall_s"] for r in runs),
        }
        for clock in clocks:
            steps = [r[f"step_{clock}"][side] for r in runs]
            out["sides"][side][f"step_{clock}"] = {"median": statistics.median(steps), "rounds": steps}
            if side != "diffusers" and "diffusers" in sides:
                ratios = [r[f"ratio_{clock}"][side] for r in runs]
                out["ratios"][f"{side}_vs_diffusers_{clock}"] = {"median": statistics.median(ratios), "rounds": ratios}
    if {"ours", "diffusers"} <= set(sides):
        ours, theirs = (out["sides"][k]["process_peak_gib"] for k in ("ours", "diffusers"))
        out["ratios"]["ours_vs_diffusers_peak"] = ours / theirs
    return out


def weights(model: str, ckpt: str | Path | None, cache: Path, sides: tuple[str, ...] = SIDES) -> tuple[Path, Path]:
    """(diffusers folder, our checkpoint) holding the same weights, written once under `cache`. SD v1: the
    folder is converted from `ckpt`. SDXL: random full-size weights are written as a diffusers folder, as
    stabilityai's repository holds them, and our bf16 checkpoint is read from it (only when our side runs)."""
    from ldm.benchmark.example_inputs import diffusers_folder

    if model == "sd1":
        ckpt = Path(ckpt)
        return diffusers_folder(ckpt, cache / f"{ckpt.stem}-diffusers"), ckpt
    from ldm.benchmark.sdxl_folder import random_sdxl_folder

    if ckpt is not None:
        raise ConfigError("--model sdxl benchmarks random full-size weights; drop --ckpt")
    folder = random_sdxl_folder(cache / "sdxl-random-diffusers")
    path = cache / "sdxl-random-bf16.safetensors"
    if "ours" in sides:
        from ldm.benchmark.sdxl_folder import checkpoint_from_folder

        checkpoint_from_folder(folder, path)
    return folder, path


def against_the_example(
    example: str | Path,
    ckpt: str | Path | None,
    cache: Path,
    resolution: int = 256,
    precision: str = "bf16",
    threads: int | None = None,
    rounds: int = 3,
    short: int = 0,
    long: int = 12,
    timeout: float = 3600,
    before: str | Path | None = None,
    model: str = "sd1",
    sides: tuple[str, ...] = SIDES,
) -> dict:
    """Prepare both sides' inputs under `cache` (once) and compare; the JSON-ready result."""
    import importlib.util

    from ldm.benchmark.example_inputs import concept_folder
    from ldm.benchmark.run import machine

    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("diffusers' example needs accelerate: pip install accelerate (the benchmark's only extra)")
    folder, ckpt = weights(model, ckpt, cache, sides)
    setup = Setup(
        example=Path(example).resolve(),
        folder=folder,
        ckpt=ckpt,
        concept=concept_folder(cache / "concept"),
        resolution=resolution,
        precision=precision,
        threads=threads,
        before=Path(before).resolve() if before else None,
        model=model,
    )
    result = compare(setup, rounds, short, long, timeout, sides)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(setup).items()}
    return {
        "task": "train",
        "against": "diffusers example (run whole)",
        "settings": {**settings, "short_steps": short, "long_steps": long, "rounds": rounds},
        "commands": {
            "ours": " ".join(main_command(setup, long, Path("OUT"))),
            "diffusers": " ".join(example_command(setup, long, Path("OUT"))),
        },
        "machine": {**machine(), **_versions(setup.example)},
        **result,
    }


def _versions(example: Path) -> dict:
    """What ran: the libraries' versions and the example file's digest (it changes between diffusers commits)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    out = {"example_sha256": hashlib.sha256(example.read_bytes()).hexdigest()}
    for name in ("diffusers", "transformers", "accelerate", "lightning"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
