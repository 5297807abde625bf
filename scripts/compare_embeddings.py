#!/usr/bin/env python
"""Compare embedding snapshots in one labelled grid (an "XYZ plot").

Columns are embedding files (e.g. the embeddings_gs-N.pt snapshots of a training run, .safetensors for
SDXL, labelled by step), rows are prompts that use the placeholder (default "*"). Every cell uses the
same seed, so the columns differ only by the learned vectors. The model is loaded once; each snapshot is
loaded into its embedding manager in turn. With a config that has no personalization_config, a manager
for --placeholder is added.

  python scripts/compare_embeddings.py --ckpt sd-v1-5.ckpt --logdir logs/cat_2024-01-01T00-00-00 \\
      --prompts "a photo of *" "* on the beach" --steps 30 --out compare.png"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ldm.cli import ArgumentParser, configure_logging, run_cli
from ldm.generate import MAX_CFG_SCALE
from ldm.models.diffusion.sample import MAX_STEPS
from ldm.validate import float_arg, int_arg

SAMPLER_NAMES = ("ddim", "plms", "k_euler", "k_euler_a", "k_heun", "k_lms")  # checked again by ldm


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="SD 1.x/2.x/SDXL .ckpt or .safetensors")
    p.add_argument(
        "--config",
        default="configs/stable-diffusion/v1-finetune.yaml",
        help="model config (default: %(default)s; SDXL: configs/stable-diffusion/sdxl-finetune.yaml)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--embeddings", nargs="+", metavar="FILE", help="embedding files, one column each, in order")
    which.add_argument(
        "--logdir",
        metavar="RUN_DIR",
        help="take every checkpoints/embeddings_gs-*.pt (SDXL: .safetensors) of this training run, sorted by step",
    )
    p.add_argument("--prompts", nargs="+", required=True, help='one row per prompt, e.g. "a photo of *"')
    p.add_argument("--negative_prompt", default="", help="unconditional prompt for every cell")
    p.add_argument(
        "--placeholder",
        default="*",
        help="placeholder to add when the config has no personalization_config (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of every cell (default: %(default)s)")
    p.add_argument("--steps", type=int_arg(1, MAX_STEPS), default=30, help="sampling steps (default: %(default)s)")
    size = "multiple of 8; default: the config's training size, 512 (768 for SD 2.x v, 1024 for SDXL)"
    p.add_argument("--H", type=int, default=None, help=f"cell height in pixels ({size})")
    p.add_argument("--W", type=int, default=None, help=f"cell width in pixels ({size})")
    p.add_argument(
        "--scale",
        type=float_arg(0, MAX_CFG_SCALE),
        default=7.5,
        help="classifier-free guidance scale (default: %(default)s)",
    )
    p.add_argument("--sampler", default="k_lms", help=f"one of {', '.join(SAMPLER_NAMES)} (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    p.add_argument(
        "--precision",
        default="autocast",
        help="full (fp32), autocast (fp16 on GPUs, fp32 on the CPU), fp16 or bf16 (default: %(default)s)",
    )
    p.add_argument("--out", default="compare_embeddings.png", help="PNG to write (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        from pathlib import Path

        from tqdm import tqdm

        from ldm.errors import ConfigError
        from ldm.evaluation.compare_embeddings import compare_embeddings, find_snapshots
        from ldm.fileio import save_png

        if Path(args.out).suffix.lower() != ".png":
            raise ConfigError(f"--out {args.out} must be a .png file")
        files = find_snapshots(args.logdir) if args.logdir else args.embeddings
        bars: list = []

        def progress(done: int, total: int) -> None:  # the bar starts once every input has been checked
            if not bars:
                bars.append(tqdm(total=total, desc="cells", unit="image"))
            bars[0].update(done - bars[0].n)

        try:
            image, layout, metadata = compare_embeddings(
                args.config,
                args.ckpt,
                files,
                args.prompts,
                seed=args.seed,
                steps=args.steps,
                width=args.W,
                height=args.H,
                cfg_scale=args.scale,
                sampler_name=args.sampler,
                negative_prompt=args.negative_prompt,
                placeholder=args.placeholder,
                device=args.device,
                precision=args.precision,
                progress=progress,
            )
        finally:
            for bar in bars:
                bar.close()
        save_png(image, args.out, metadata)
        print(f"wrote {args.out}: {layout.rows} prompts x {layout.cols} embeddings, {image.width}x{image.height}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
