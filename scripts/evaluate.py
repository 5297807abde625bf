#!/usr/bin/env python
"""Evaluate learned embeddings. Subcommands:

  clip   the Textual Inversion paper's CLIP metrics for a folder of generated images: image-image
         similarity to the training images and image-text similarity to the prompt without the
         placeholder. Needs a local CLIP model folder (e.g. openai/clip-vit-large-patch14 saved with
         save_pretrained); nothing is downloaded.

  python scripts/evaluate.py clip --clip_model models/clip-vit-large-patch14 \\
      --generated outputs/cat --training training_data/cat --prompt "a photo of *"

  toy    fidelity and editability of a toy-world concept (configs/toy-world), with the init-word and
         true-words baselines, scored by the toy world's attribute classifier.

  python scripts/evaluate.py toy --embedding_path logs/<run>/checkpoints/embeddings.pt --concept "purple star"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ldm.cli import ArgumentParser, configure_logging, run_cli
from ldm.generate import MAX_CFG_SCALE
from ldm.models.diffusion.sample import MAX_STEPS
from ldm.validate import float_arg, int_arg


# -- clip ------------------------------------------------------------------------------------------------
def add_clip_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "clip",
        parents=[common],
        help="CLIP image-image and image-text similarity (the paper's metrics)",
        description="Mean CLIP cosine similarity of generated images to the training images "
        "(all pairs) and to the prompt with the placeholder removed.",
    )
    p.add_argument(
        "--clip_model",
        required=True,
        metavar="PATH",
        help="local folder of a transformers CLIPModel (config.json + weights); never downloaded",
    )
    p.add_argument("--generated", required=True, metavar="DIR", help="folder of generated images")
    p.add_argument("--training", required=True, metavar="DIR", help="folder of the concept's training images")
    p.add_argument("--prompt", required=True, help='the prompt the images were generated with, e.g. "a photo of *"')
    p.add_argument("--placeholder", default="*", help="placeholder to remove from the prompt (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    p.add_argument(
        "--batch_size", type=int_arg(1, 4096), default=32, help="images per CLIP batch (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    p.set_defaults(run=run_clip)


def run_clip(args: argparse.Namespace) -> int:
    import json

    from ldm.errors import ConfigError
    from ldm.evaluation.clip_metrics import evaluate_clip, format_table

    if args.batch_size < 1:
        raise ConfigError(f"--batch_size {args.batch_size}; use 1 or more")
    if not args.verbose:  # transformers' weight-loading bar would be the only thing on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    scores = evaluate_clip(
        args.clip_model,
        args.generated,
        args.training,
        args.prompt,
        placeholder=args.placeholder,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(json.dumps(scores.to_dict(), indent=2) if args.json else format_table(scores))
    return 0


# -- toy -------------------------------------------------------------------------------------------------
def add_toy_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "toy",
        parents=[common],
        help="fidelity and editability of a toy-world concept",
        description="Sample 'a photo of a *' and 'a photo of a * on a <colour> background' with the "
        "embedding, the init word and the true words, and score them with the toy "
        "world's attribute classifier.",
    )
    p.add_argument("--embedding_path", metavar="FILE", help="the learned embedding (omit to score the baselines only)")
    p.add_argument("--concept", required=True, help='the concept as "<colour> <shape>", e.g. "purple star"')
    p.add_argument("--init_word", default="shape", help="the init word baseline (default: %(default)s)")
    p.add_argument("--placeholder", default="*", help="the embedding's word in prompts (default: %(default)s)")
    p.add_argument("--config", default="configs/toy-world/inference.yaml", help="model config (default: %(default)s)")
    p.add_argument("--weights", default="models/toy-world/toy-world.safetensors", help="(default: %(default)s)")
    p.add_argument("--classifier", default="models/toy-world/classifier.safetensors", help="(default: %(default)s)")
    p.add_argument("--samples", type=int_arg(1, 100_000), default=32, help="K images per prompt (default: %(default)s)")
    p.add_argument(
        "--backgrounds",
        default=None,
        help="comma-separated background colours for editability (default: 4 spread over the palette)",
    )
    p.add_argument("--steps", type=int_arg(1, MAX_STEPS), default=25, help="sampler steps (default: %(default)s)")
    p.add_argument("--sampler", default="ddim", help="(default: %(default)s)")
    p.add_argument("--cfg_scale", type=float_arg(0, MAX_CFG_SCALE), default=5.0, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="first seed; every prompt form uses the same seeds")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    p.set_defaults(run=run_toy)


def run_toy(args: argparse.Namespace) -> int:
    import json

    from ldm.evaluation.toy_metrics import Concept, SamplingSettings, Scores, evaluate_toy, table

    settings = SamplingSettings(
        samples=args.samples, steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, seed=args.seed
    )
    backgrounds = [b.strip() for b in args.backgrounds.split(",") if b.strip()] if args.backgrounds else None
    result = evaluate_toy(
        args.config,
        args.weights,
        args.classifier,
        Concept.parse(args.concept),
        args.init_word,
        args.embedding_path,
        args.placeholder,
        backgrounds,
        settings,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"concept: {result['concept']}; backgrounds: {', '.join(result['backgrounds'])}")
    print(table([Scores(**row) for row in result["rows"]]))
    if result.get("fidelity_vs_true_words") is not None:
        print(f"embedding fidelity / true-words fidelity: {result['fidelity_vs_true_words']:.1%}")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None], ...] = (
    add_clip_parser,
    add_toy_parser,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)  # flags every subcommand takes
    common.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub, common)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    return run_cli(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
