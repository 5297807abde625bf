#!/usr/bin/env python
"""Convert a textual-inversion embedding between file formats, bit-exactly.

Reads any supported file (paper/InvokeAI/A1111 .pt, A1111/kohya emb_params .safetensors, diffusers
learned_embeds.bin/.safetensors, A1111 .png) and writes OUT in the format its suffix names, or --format:
  .pt/.ckpt/.pth -> paper   .safetensors -> emb_params (diffusers for several terms)
  .bin -> diffusers         .png -> a1111-png
Vectors are copied as float32 without rounding. A format keeps only what it can hold (diffusers files
keep no step; emb_params files are named by their file name). OUT is written atomically; IN is never
overwritten."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ldm.cli import ArgumentParser, configure_logging, run_cli

FORMAT_NAMES = ("paper", "emb_params", "diffusers", "a1111-png")  # = ldm.embeddings.FORMATS, kept import-free


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="embedding file to read (any supported format)")
    p.add_argument("output", metavar="OUT", help="file to write; its suffix picks the format unless --format")
    p.add_argument("--format", choices=FORMAT_NAMES, default=None, help="output format (default: from OUT's suffix)")
    p.add_argument("--name", default=None, help="new name for the term (single-term files only)")
    p.add_argument(
        "--preview",
        default=None,
        metavar="IMAGE",
        help="picture to carry an a1111-png embedding (default: the input's own picture, else a generated card)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        from ldm.embeddings.tools import convert_embedding

        out, fmt, terms = convert_embedding(
            args.input, args.output, format=args.format, name=args.name, preview=args.preview
        )
        listing = ", ".join(f"{t.name} [{t.num_vectors}x{t.dim}]" for t in terms)
        print(f"wrote {out} ({fmt}): {listing}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
