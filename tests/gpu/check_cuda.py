#!/usr/bin/env python
"""CUDA checks for a machine with an NVIDIA GPU (never part of the test suites, which run on CPU).

For SD v1 (512 px) and SDXL (1024 px, aspect buckets), on random full-size weights in the real key layout:
main.py trains a word with `--gpus 0,` with the frozen networks in bf16 and in fp16, then txt2img draws
"a photo of *" with each learned file in autocast (fp16) and bf16. Each run must exit 0; each embedding
must be finite; each image must not be flat (NaN latents decode to a flat black image). Prints a JSON
summary: median step time after 2 warm-up steps (steps/s), the GPU's peak memory in use during the run
(nvidia-smi), and each image's mean and spread.

  python tests/gpu/check_cuda.py --work /tmp/gpu --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CONFIGS = ROOT / "configs" / "stable-diffusion"
FAMILIES = {  # finetune config, inference config, training size
    "sd1": (CONFIGS / "v1-finetune.yaml", CONFIGS / "v1-inference.yaml", 512),
    "sdxl": (CONFIGS / "sdxl-finetune.yaml", CONFIGS / "sdxl-base-inference.yaml", 1024),
}


class GpuPeak:
    """The most GPU memory in use (MiB, nvidia-smi) while it runs."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out:
                self.peak = max(self.peak, int(out[0]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(cmd: list[str], log: Path) -> dict:
    peak, start = GpuPeak(), time.perf_counter()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # scripts import ldm
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    result = {"rc": r.returncode, "wall_s": round(time.perf_counter() - start, 1), "gpu_peak_mib": peak.stop()}
    log.write_text(" ".join(cmd) + "\n\n" + r.stdout + "\n" + r.stderr, encoding="utf-8")
    if r.returncode:
        result["stderr_tail"] = r.stderr[-1500:]
    return result


def weights(family: str, work: Path) -> Path:
    if family == "sd1":
        from ldm.benchmark.weights import random_checkpoint

        return random_checkpoint(work / "sd1-random.safetensors")
    from test_training_full_sdxl import write_random_sdxl

    path = work / "sdxl-random.safetensors"
    if not path.is_file():
        write_random_sdxl(path)
    return path


def train(family: str, precision: str, ckpt: Path, data: Path, work: Path, steps: int) -> dict:
    from ldm.callbacks.step_timer import STEP_TIME
    from ldm.training.metrics_log import read_metrics

    finetune, _, size = FAMILIES[family]
    logs = work / f"logs-{family}-{precision}"
    cmd = [sys.executable, "main.py", "--base", str(finetune), "-t", "--actual_resume", str(ckpt)]
    cmd += ["-n", f"{family}-{precision}", "--gpus", "0,", "--data_root", str(data), "--init_word", "cat"]
    cmd += ["-l", str(logs), "--max_steps", str(steps), "--precision", precision]
    cmd += [f"data.params.train.params.size={size}", "model.params.training.log_every_n_steps=1"]
    result = run(cmd, work / f"train-{family}-{precision}.log")
    if result["rc"]:
        return result
    run_dir = max((p for p in logs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)  # this run's
    times = [t for _, t in read_metrics(run_dir, (STEP_TIME,))[STEP_TIME]]
    median = statistics.median(times[2:])
    (embedding,) = [p for p in (run_dir / "checkpoints").glob("embeddings.*") if p.suffix != ".tmp"]
    from ldm.embeddings import read_embedding_file

    (term,) = read_embedding_file(embedding)
    finite = bool(term.vectors.isfinite().all())
    return {
        **result,
        "step_s": round(median, 4),
        "steps_per_s": round(1 / median, 2),
        "finite": finite,
        "embedding": str(embedding),
        "steps_logged": len(times),
    }


def sample(family: str, precision: str, ckpt: Path, embedding: str, work: Path, out: Path, tag: str) -> dict:
    import numpy as np
    from PIL import Image

    _, inference, size = FAMILIES[family]
    outdir = work / f"txt2img-{tag}"
    cmd = [sys.executable, "scripts/txt2img.py", "--config", str(inference), "--ckpt", str(ckpt)]
    cmd += ["--embedding_path", embedding, "--prompt", "a photo of *", "--negative_prompt", "blurry"]
    cmd += ["--outdir", str(outdir), "--ddim_steps", "20", "--W", str(size), "--H", str(size)]
    cmd += ["--precision", precision, "--device", "cuda", "--skip_grid"]
    result = run(cmd, work / f"txt2img-{tag}.log")
    if result["rc"]:
        return result
    (png,) = sorted((outdir / "samples").glob("*.png"))
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    if precision == "autocast":  # at most 8 files come back from the GPU machine
        (out / f"{tag}.png").write_bytes(png.read_bytes())
    nan_warned = "nan" in (work / f"txt2img-{tag}.log").read_text(encoding="utf-8").lower()
    return {
        **result,
        "mean": round(float(pixels.mean()), 1),
        "std": round(float(pixels.std()), 1),
        "flat": bool(pixels.std() < 1),
        "nan_in_log": nan_warned,
        "size": list(pixels.shape[:2]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="scratch folder (weights ~10 GB, runs)")
    p.add_argument("--out", type=Path, required=True, help="where the summary JSON and the images go")
    p.add_argument("--families", nargs="+", default=["sd1", "sdxl"], choices=list(FAMILIES))
    p.add_argument("--steps", type=int, default=20, help="training steps per run")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"], help="training")
    args = p.parse_args()
    import torch
    from train_helpers import make_concept

    if not torch.cuda.is_available():
        print("error: no CUDA device: run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "runs": {}}
    for family in args.families:
        start = time.perf_counter()
        ckpt = weights(family, args.work)
        summary["runs"][f"{family}/weights_s"] = round(time.perf_counter() - start, 1)
        data = make_concept(args.work / f"concept-{family}", n=5, size=FAMILIES[family][2])
        for precision in args.precisions:
            got = train(family, precision, ckpt, data, args.work, args.steps)
            summary["runs"][f"{family}/train/{precision}"] = got
            print(json.dumps({f"{family}/train/{precision}": got}), flush=True)
            if got["rc"]:
                continue
            for sampling in ("autocast", "bf16"):
                tag = f"{family}-{precision}-{sampling}"
                got_s = sample(family, sampling, ckpt, got["embedding"], args.work, args.out, tag)
                summary["runs"][f"{family}/txt2img/{tag}"] = got_s
                print(json.dumps({tag: got_s}), flush=True)
            (args.out / "gpu_checks.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (args.out / "gpu_checks.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
