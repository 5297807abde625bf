#!/usr/bin/env python
"""Speed and memory of textual-inversion training steps and of sampling, side by side with diffusers.

  train   our training step (cached latents, frozen networks in --precision, fp32 vectors) against the
          step of diffusers' examples/textual_inversion/textual_inversion.py and a bare UNet
          forward+backward-to-context (the floor), on the same weights
  sample  Generate (DDIM, batched classifier-free guidance) against StableDiffusionPipeline (DDIM)

Each side runs in a fresh process, alternating over --rounds; prints JSON with time per step and per
sample, samples/s, peak memory (RSS on CPU, allocated VRAM on CUDA) and the ratios ours / theirs.
Without --ckpt a full-size SD v1 model with random weights is written once to --cache.

  python scripts/benchmark.py train --against diffusers --resolution 256 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ldm.cli import configure_logging, run_cli
from ldm.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=("train", "sample"))
    p.add_argument(
        "--against", choices=("diffusers", "none"), default="diffusers", help="baseline (default: diffusers)"
    )
    p.add_argument("--ckpt", help="an SD v1 .ckpt/.safetensors (default: random full-size weights)")
    p.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "ti-benchmark" / "sd-v1-random-bf16.safetensors"),
        help="where the random checkpoint is kept between runs",
    )
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", choices=PRECISIONS, default="bf16", help="dtype of the frozen networks")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=5, help="measured steps (train) or images batches (sample) per run")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--rounds", type=int, default=2, help="runs per side, alternating the order")
    p.add_argument("--sample_steps", type=int, default=20, help="sampler steps per image (sample)")
    p.add_argument("--cfg_scale", type=float, default=7.5)
    p.add_argument("--no_floor", action="store_true", help="train: skip the bare-UNet floor")
    p.add_argument("--gradient_checkpointing", action="store_true", help="ours: trade compute for memory")
    p.add_argument("--channels_last", action="store_true", help="ours: UNet in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the UNet")
    p.add_argument("--threads", type=int, default=None, help="torch threads per side (default: torch's choice)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        from ldm.benchmark.run import benchmark
        from ldm.benchmark.weights import random_checkpoint

        if args.resolution % 8 or args.resolution < 64:
            raise ConfigError(f"--resolution {args.resolution}; use a multiple of 8, at least 64")
        for name in ("batch", "steps", "rounds", "sample_steps"):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if args.ckpt and not Path(args.ckpt).is_file():
            raise ConfigError(f"--ckpt {args.ckpt} does not exist")
        ckpt = args.ckpt or str(random_checkpoint(args.cache))
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
        }
        sides = ["ours"]
        if args.against == "diffusers":
            sides.append("diffusers")
        if args.task == "train" and not args.no_floor:
            sides.append("floor")
        result = benchmark(spec, sides, args.rounds)
        text = json.dumps(result, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
