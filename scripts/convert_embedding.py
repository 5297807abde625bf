#!/usr/bin/env python
"""Convert a textual-inversion embedding between file formats, bit-exactly.

Reads any supported file (paper/InvokeAI/A1111 .pt, A1111/kohya emb_params .safetensors, diffusers
learned_embeds.bin/.safetensors, A1111 .png; SDXL clip_l/clip_g files of A1111/ComfyUI/InvokeAI/kohya
and diffusers' SDXL pair) and writes OUT in the format its suffix names, or --to (--format):
  .pt/.ckpt/.pth -> paper   .safetensors -> emb_params (diffusers for several terms)
  .bin -> diffusers         .png -> a1111-png
SDXL embeddings (clip_l [n,768] + clip_g [n,1280]) convert between the SDXL layouts:
  .safetensors (default) or .pt -> sdxl: {"clip_l", "clip_g"}, what A1111/ComfyUI/InvokeAI/kohya read
  .png -> a1111-png with the two tensors
  --to diffusers -> diffusers' pair learned_embeds.safetensors + learned_embeds_2.safetensors (each
    {token: vectors}, loaded by two load_textual_inversion calls: text_encoder/tokenizer and
    text_encoder_2/tokenizer_2). OUT is a folder (both files go into it) or a file named
    learned_embeds.safetensors (or .bin; learned_embeds_2 is written beside it).
IN may be either file of diffusers' pair, or its folder: the pair is read as one SDXL term per token.
Vectors are copied as float32 without rounding. A format keeps only what it can hold (diffusers files
keep no step; emb_params files are named by their file name). OUT is written atomically (the pair:
both files or neither); IN is never overwritten."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ldm.cli import ArgumentParser, configure_logging, run_cli

FORMAT_NAMES = ("paper", "emb_params", "diffusers", "a1111-png", "sdxl")  # = ldm.embeddings.FORMATS, import-free


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="embedding file to read (any supported format)")
    p.add_argument(
        "output", metavar="OUT", help="file to write (diffusers' SDXL pair: a folder); its suffix picks the format"
    )
    p.add_argument(
        "--to",
        "--format",
        dest="format",
        choices=FORMAT_NAMES,
        default=None,
        help="output format (default: from OUT's suffix; SDXL: sdxl, or diffusers for the two-file pair)",
    )
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
