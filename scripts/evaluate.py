#!/usr/bin/env python
"""Evaluate learned embeddings. Subcommands:

  clip   the Textual Inversion paper's CLIP metrics for a folder of generated images: image-image
         similarity to the training images and image-text similarity to the prompt without the
         placeholder. Needs a local CLIP model folder (e.g. openai/clip-vit-large-patch14 saved with
         save_pretrained); nothing is downloaded.

  python scripts/evaluate.py clip --clip_model models/clip-vit-large-patch14 \\
      --generated outputs/cat --training training_data/cat --prompt "a photo of *"
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from ldm.cli import configure_logging, run_cli


# -- clip ------------------------------------------------------------------------------------------------
def add_clip_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("clip", parents=[common], help="CLIP image-image and image-text similarity (the paper's metrics)",
                       description="Mean CLIP cosine similarity of generated images to the training images "
                                   "(all pairs) and to the prompt with the placeholder removed.")
    p.add_argument("--clip_model", required=True, metavar="PATH",
                   help="local folder of a transformers CLIPModel (config.json + weights); never downloaded")
    p.add_argument("--generated", required=True, metavar="DIR", help="folder of generated images")
    p.add_argument("--training", required=True, metavar="DIR", help="folder of the concept's training images")
    p.add_argument("--prompt", required=True, help='the prompt the images were generated with, e.g. "a photo of *"')
    p.add_argument("--placeholder", default="*", help="placeholder to remove from the prompt (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=32, help="images per CLIP batch (default: %(default)s)")
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
    scores = evaluate_clip(args.clip_model, args.generated, args.training, args.prompt,
                           placeholder=args.placeholder, device=args.device, batch_size=args.batch_size)
    print(json.dumps(scores.to_dict(), indent=2) if args.json else format_table(scores))
    return 0


# -- toy -------------------------------------------------------------------------------------------------
# Place for `evaluate.py toy`: write add_toy_parser(sub, common) like add_clip_parser (parents=[common],
# set_defaults(run=run_toy)) and run_toy(args) -> int calling logic in ldm/evaluation/, then list
# add_toy_parser in SUBCOMMANDS.


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None], ...] = (
    add_clip_parser,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)  # flags every subcommand takes
    common.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub, common)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    return run_cli(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
