#!/usr/bin/env python
"""Merge several textual-inversion embedding files into one file holding every term.

OUT is a multi-term paper .pt (also .ckpt/.pth) or a diffusers .bin/.safetensors; inputs may be in
any supported format. Each term is keyed by its name. Two terms with the same name (compared
case-insensitively, as CLIP lower-cases prompts) are an error naming both files, unless --rename:
then the later ones become NAME-2, NAME-3, ... and each rename is printed. Note: A1111 reads only one
term from a .pt file; use a diffusers file or InvokeAI/this project for multi-term files.
SDXL embeddings (clip_l + clip_g) are one term per file in A1111/ComfyUI/kohya's layout, so they merge
into diffusers' pair: OUT a folder (or learned_embeds.safetensors) gets learned_embeds.safetensors +
learned_embeds_2.safetensors with one token per term."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ldm.cli import ArgumentParser, configure_logging, run_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "output",
        metavar="OUT",
        help="merged file: .pt/.ckpt/.pth (paper) or .bin/.safetensors (diffusers); SDXL: a folder (diffusers' pair)",
    )
    p.add_argument("inputs", metavar="IN", nargs="+", help="embedding files to merge (two or more)")
    p.add_argument(
        "--rename",
        action="store_true",
        help="rename clashing terms of later files to NAME-2, NAME-3, ... instead of failing",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        from ldm.embeddings.tools import merge_embedding_files

        out, fmt, terms, renames = merge_embedding_files(args.output, args.inputs, rename=args.rename)
        for r in renames:
            print(f"renamed {r.old!r} from {r.source} to {r.new!r}")
        print(f"wrote {out} ({fmt}, {len(terms)} terms): {', '.join(t.name for t in terms)}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
