#!/usr/bin/env python
"""Speed and memory of textual-inversion training and of sampling, side by side with diffusers.

  train --against diffusers --diffusers_example PATH
          main.py against diffusers' examples/textual_inversion/textual_inversion.py itself (the file
          at PATH, run as a user runs it; it needs `pip install accelerate`), same weights, concept,
          size, batch 1 and precision. With --model sdxl: against textual_inversion_sdxl.py, on random
          full-size SDXL weights (a diffusers folder in --cache's folder, and our checkpoint read from
          it). Each side trains --long_steps (12) in a fresh process; its time per step is the median step
          read inside that run once 2 warm-up steps are past (ours: the metrics CSV; the example: its
          progress bar), so loading, start-up and saving stay out. With --short_steps N > 0 each side
          also trains N steps, and (long - short wall and CPU time) / (long - short steps) is printed
          beside it as a cross-check; --short_steps 0 skips those runs.
  train --against floor
          our training step in one process (the objective main.py uses) against a bare diffusers UNet
          forward + backward to the text context: nothing of textual inversion is cheaper
  train --against roofline [--model sdxl]
          our training step in one process against this machine's matrix-product rate: the step's
          FLOPs (torch's FlopCounterMode), the best rate of a 2048^3 product in the same dtype and
          threads, the fraction of it the step reaches and the step's floor at that rate
  sample  Generate (DDIM, batched classifier-free guidance) against StableDiffusionPipeline (DDIM)
  web     the browser UI's latency: the real server on a toy project, a toy training started through the
          Train page's API, then --concurrency simultaneous GETs of each main page, --rounds times;
          prints p50/p95 per page (no diffusers, no checkpoint)

Sides alternate over --rounds in fresh processes; prints JSON with times, peak memory (RSS on CPU,
allocated VRAM on CUDA) and the ratios ours / theirs. Without --ckpt a full-size SD v1 model with random
weights is written once to --cache (and, for the example, once more as a diffusers folder beside it).

  python scripts/benchmark.py train --against diffusers --diffusers_example textual_inversion.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ldm.cli import configure_logging, run_cli
from ldm.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
CACHE = Path.home() / ".cache" / "ti-benchmark"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=("train", "sample", "web"))
    p.add_argument(
        "--against",
        choices=("diffusers", "floor", "roofline", "none"),
        default="diffusers",
        help="baseline (default: diffusers)",
    )
    p.add_argument("--diffusers_example", help="train --against diffusers: path of diffusers' textual_inversion.py")
    p.add_argument(
        "--short_steps", type=int, default=0, help="train --against diffusers: steps of the short runs, 0 for none"
    )
    p.add_argument("--long_steps", type=int, default=12, help="train --against diffusers: steps of each timed run")
    p.add_argument(
        "--before", help="train --against diffusers: also run main.py of this other checkout (a change's effect)"
    )
    p.add_argument(
        "--model",
        choices=("sd1", "sdxl"),
        default="sd1",
        help="model family (sdxl: train --against diffusers or roofline)",
    )
    p.add_argument(
        "--only",
        choices=("ours", "diffusers"),
        help="train --against diffusers: run one side alone (fits a smaller machine; no ratios)",
    )
    p.add_argument("--ckpt", help="an SD v1 .ckpt/.safetensors (default: random full-size weights)")
    p.add_argument(
        "--cache",
        default=str(CACHE / "sd-v1-random-bf16.safetensors"),
        help="where the random checkpoint is kept between runs (its folder also holds the SDXL weights)",
    )
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=PRECISIONS, default="bf16", help="dtype of the frozen networks")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=5, help="measured steps (floor) or image batches (sample) per run")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (floor, sample)")
    p.add_argument("--rounds", type=int, default=2, help="runs per side, alternating the order")
    p.add_argument("--sample_steps", type=int, default=20, help="sampler steps per image (sample)")
    p.add_argument("--cfg_scale", type=float, default=7.5)
    p.add_argument("--gradient_checkpointing", action="store_true", help="ours: trade compute for memory")
    p.add_argument("--channels_last", action="store_true", help="ours: UNet in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the UNet")
    p.add_argument("--threads", type=int, default=None, help="torch threads per side (default: torch's choice)")
    p.add_argument("--concurrency", type=int, default=20, help="web: simultaneous requests per page")
    p.add_argument("--idle", action="store_true", help="web: measure without a training running")
    p.add_argument("--timeout", type=float, default=3600, help="seconds any one run may take (a hang guard)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.resolution % 8 or args.resolution < 64:
        raise ConfigError(f"--resolution {args.resolution}; use a multiple of 8, at least 64")
    for name in ("batch", "steps", "rounds", "sample_steps", "concurrency"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1")
    if args.task == "train" and args.against == "diffusers":  # before minutes of writing weights
        from ldm.benchmark.real_example import check_lengths

        check_lengths(args.short_steps, args.long_steps)
    if args.model == "sdxl" and (args.task != "train" or args.against not in ("diffusers", "roofline") or args.ckpt):
        raise ConfigError(
            "--model sdxl runs train --against diffusers (or roofline) on random full-size weights; drop --ckpt "
            "and use: train --against diffusers --diffusers_example PATH/textual_inversion_sdxl.py"
        )
    if args.only and args.before:
        raise ConfigError("--before adds a side to a comparison; drop --only")
    if args.ckpt and not Path(args.ckpt).is_file():
        raise ConfigError(f"--ckpt {args.ckpt} does not exist")
    if args.task == "sample" and args.against in ("floor", "roofline"):
        raise ConfigError(f"--against {args.against} is a training baseline; sample compares with diffusers or none")
    if args.task == "train" and args.against == "diffusers":
        if not args.diffusers_example:
            raise ConfigError(
                "train --against diffusers runs diffusers' example itself: pass --diffusers_example "
                "PATH/examples/textual_inversion/textual_inversion.py (or --against floor)"
            )
        if not Path(args.diffusers_example).is_file():
            raise ConfigError(f"--diffusers_example {args.diffusers_example} does not exist")
        if args.before and not (Path(args.before) / "main.py").is_file():
            raise ConfigError(f"--before {args.before} has no main.py; pass the root of another checkout")
        if args.batch != 1 or args.device != "cpu":
            raise ConfigError("train --against diffusers runs batch 1 on the CPU; drop --batch/--device")


def _against_the_example(args: argparse.Namespace, ckpt: str | None) -> dict:
    from ldm.benchmark.real_example import against_the_example

    return against_the_example(
        args.diffusers_example,
        ckpt,
        Path(args.cache).parent,
        resolution=args.resolution,
        precision=args.precision,
        threads=args.threads,
        rounds=args.rounds,
        short=args.short_steps,
        long=args.long_steps,
        timeout=args.timeout,
        before=args.before,
        model=args.model,
        sides=(args.only,) if args.only else ("ours", "diffusers"),
    )


def _side_by_side(args: argparse.Namespace, ckpt: str) -> dict:
    from ldm.benchmark.run import benchmark

    spec = {
        "task": args.task,
        "ckpt": ckpt,
        "resolution": args.resolution,
        "batch": args.batch,
        "precision": args.precision,
        "device": args.device,
        "steps": args.steps,
        "warmup": args.warmup,
        "sample_steps": args.sample_steps,
        "cfg_scale": args.cfg_scale,
        "threads": args.threads,
        "gradient_checkpointing": args.gradient_checkpointing,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "model": args.model,
        "roofline": args.against == "roofline",
    }
    sides = ["ours"]
    if args.against not in ("none", "roofline"):
        sides.append("floor" if args.task == "train" else "diffusers")
    return benchmark(spec, sides, args.rounds)


def _web(args: argparse.Namespace) -> dict:
    from ldm.benchmark.web_latency import web_latency

    return web_latency(concurrency=args.concurrency, rounds=args.rounds, train=not args.idle)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        from ldm.benchmark.weights import random_checkpoint

        check_args(args)
        if args.model == "sdxl" and args.against == "roofline":
            from ldm.benchmark.real_example import weights

            ckpt = str(weights("sdxl", None, Path(args.cache).parent, sides=("ours",))[1])
        elif args.model == "sdxl":
            ckpt = None  # the SDXL weights are written with the diffusers folder (real_example.weights)
        elif args.task != "web":
            ckpt = args.ckpt or str(random_checkpoint(args.cache))
        if args.task == "web":
            result = _web(args)
        elif args.task == "train" and args.against == "diffusers":
            result = _against_the_example(args, ckpt)
        else:
            result = _side_by_side(args, ckpt)
        text = json.dumps(result, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
