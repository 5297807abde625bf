#!/usr/bin/env python
"""Text to image with an SD 1.x, 2.x or SDXL checkpoint; the flags of the paper repo's stable_txt2img.py, plus
--sampler, --negative_prompt and --device. Writes OUTDIR/samples/NNNNN.png and OUTDIR/grid-NNNN.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli import ArgumentParser, configure_logging, run_cli
from ldm.errors import LdmUserError
from ldm.generate import MAX_CFG_SCALE, MAX_ITERATIONS, SEED_RANGE
from ldm.models.diffusion.sample import MAX_STEPS
from ldm.models.diffusion.sampling import SAMPLERS
from ldm.validate import float_arg, int_arg


def parse_args(argv=None) -> argparse.Namespace:
    # Numbers are checked while parsing (finite, in range), so a bad flag fails before the model loads.
    p = ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt", default="a painting of a virus monster playing guitar", help="text to render")
    p.add_argument("--negative_prompt", default="", help="what the image should not show (the unconditional prompt)")
    p.add_argument("--from-file", dest="from_file", help="read one prompt per line from this file")
    p.add_argument("--outdir", default="outputs/txt2img-samples", help="where samples/ and grids go")
    p.add_argument("--skip_grid", action="store_true", help="do not write a grid of all samples")
    p.add_argument("--skip_save", action="store_true", help="do not write the individual samples")
    p.add_argument("--ddim_steps", type=int_arg(1, MAX_STEPS), default=50, help="number of sampling steps")
    p.add_argument("--plms", action="store_true", help="use the plms sampler (same as --sampler plms)")
    p.add_argument(
        "--sampler", default=None, help=f"sampler, one of: {', '.join(SAMPLERS)} (default: ddim, or plms with --plms)"
    )
    p.add_argument("--karras", action="store_true", help="Karras et al. sigma spacing for the sampler")
    p.add_argument(
        "--ddim_eta",
        type=float_arg(0, 1),
        default=0.0,
        help="eta of ddim / ancestral samplers (0 = deterministic ddim)",
    )
    p.add_argument("--n_iter", type=int_arg(1, MAX_ITERATIONS), default=1, help="batches to sample")
    p.add_argument("--n_samples", type=int_arg(1), default=1, help="images per batch (per prompt)")
    p.add_argument("--n_rows", type=int_arg(0), default=0, help="images per grid row (default: n_samples)")
    size = "multiple of 8, up to 4096; default: the config's training size, 512 (768 for v2-inference-v.yaml, "
    size += "1024 for SDXL)"
    p.add_argument("--H", type=int_arg(None), default=None, help=f"image height in pixels ({size})")
    p.add_argument("--W", type=int_arg(None), default=None, help=f"image width in pixels ({size})")
    p.add_argument(
        "--scale", type=float_arg(0, MAX_CFG_SCALE), default=7.5, help="classifier-free guidance scale (1 = none)"
    )
    p.add_argument(
        "--config",
        default="configs/stable-diffusion/v1-inference.yaml",
        help="model config (SD 2.x: configs/stable-diffusion/v2-inference-v.yaml, or v2-inference.yaml for 512-base; "
        "SDXL: configs/stable-diffusion/sdxl-base-inference.yaml)",
    )
    p.add_argument(
        "--ckpt",
        default="models/ldm/stable-diffusion-v1/model.ckpt",
        help="SD 1.x/2.x/SDXL .ckpt, .safetensors or diffusers folder",
    )
    p.add_argument("--use_ema", action="store_true", help="use the model_ema.* weights of the checkpoint")
    p.add_argument("--seed", type=int_arg(*SEED_RANGE), default=42, help="seed; batch i uses seed + i")
    p.add_argument(
        "--embedding_path", action="append", default=[], help="a learned embedding file, any format (repeatable)"
    )
    p.add_argument(
        "--precision", default="autocast", help="full (fp32), autocast (fp16 on GPUs, fp32 on the CPU), fp16 or bf16"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO); by default only warnings")
    return p.parse_args(argv)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if not args.from_file:
        return [args.prompt]
    path = Path(args.from_file)
    if not path.is_file():
        raise LdmUserError(f"--from-file {path}: no such file; pass a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LdmUserError(f"--from-file {path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise LdmUserError(f"--from-file {path} has no prompts; write one prompt per line")
    return prompts


def next_index(folder: Path, pattern: str) -> int:
    numbers = [int(p.stem.split("-")[-1]) for p in folder.glob(pattern) if p.stem.split("-")[-1].isdigit()]
    return max(numbers, default=-1) + 1


def run(args: argparse.Namespace) -> list[Path]:
    from tqdm import tqdm

    from ldm.embeddings import read_embedding_file
    from ldm.fileio import check_output_dir, save_png
    from ldm.generate import Generate, check_batch, check_size
    from ldm.image_size import resolve_size
    from ldm.image_utils import make_grid
    from ldm.prompts.parser import parse_prompt

    # Everything the user typed is checked before minutes of model loading.
    args.W, args.H = resolve_size(args.W, args.H, args.config)
    check_size(args.W, args.H, names=("--W", "--H"))
    check_batch(args.n_samples, args.W, args.H, "--n_samples")
    outdir = check_output_dir(args.outdir, "--outdir")
    prompts = read_prompts(args)
    for prompt in [*prompts, args.negative_prompt]:
        parse_prompt(prompt)  # emphasis weights: (word:nan) fails here, not in the sampler
    for path in args.embedding_path:
        read_embedding_file(path)  # unreadable or NaN/inf vectors: refused before the model loads
    sampler = args.sampler or ("plms" if args.plms else "ddim")
    gen = Generate(
        config=args.config,
        weights=args.ckpt,
        device=args.device,
        precision=args.precision,
        sampler_name=sampler,
        use_ema=args.use_ema or None,
        embedding_paths=args.embedding_path,
    )
    gen.load_model()
    if args.embedding_path:
        _ = gen.conditioner  # reads the files: a broken one fails now, before sampling
    sample_dir = outdir / "samples"
    count = next_index(sample_dir, "*.png")
    written, all_images = [], []
    for prompt in prompts:
        total = gen.step_count(args.ddim_steps, sampler, args.karras) * args.n_iter
        with tqdm(total=total, desc="sampling", unit="step") as bar:
            results = gen.txt2img(
                prompt,
                negative_prompt=args.negative_prompt,
                iterations=args.n_iter,
                batch_size=args.n_samples,
                steps=args.ddim_steps,
                seed=args.seed,
                cfg_scale=args.scale,
                ddim_eta=args.ddim_eta,
                width=args.W,
                height=args.H,
                karras=args.karras,
                step_callback=lambda info: bar.update(1),
            )
        for image, seed in results:
            all_images.append(image)
            if not args.skip_save:
                text = {
                    "prompt": prompt,
                    "negative_prompt": args.negative_prompt,
                    "seed": str(seed),
                    "sampler": sampler,
                }
                written.append(save_png(image, sample_dir / f"{count:05}.png", text))
                count += 1
    if not args.skip_grid:
        grid = make_grid(all_images, nrow=args.n_rows or args.n_samples)
        written.append(save_png(grid, outdir / f"grid-{next_index(outdir, 'grid-*.png'):04}.png"))
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    # INFO only on request: on a user error, stderr must hold the one-line message and nothing else.
    configure_logging(args.verbose)

    def body() -> int:
        written = run(args)
        print(f"wrote {len(written)} files to {args.outdir}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
