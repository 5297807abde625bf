#!/usr/bin/env python
"""Prepare training images: upright (EXIF), square-cropped (centre or focus on detail) and resized,
optionally mirrored copies, tiles of very long images, and .txt captions from the file names or from a
BLIP captioning model on disk (--caption_model). Writes DST/<name>.png (and DST/<name>.txt); sidecar
captions SRC/<name>.txt are carried over."""

from __future__ import annotations

import argparse
import logging
import sys

from ldm.cli import run_cli
from ldm.data.captioning import Captioner, caption_files
from ldm.data.preprocess import CROPS, PreprocessOptions, preprocess_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--src", required=True, help="folder of raw images")
    p.add_argument("--dst", required=True, help="folder for the prepared images (created if missing)")
    p.add_argument("--size", type=int, default=512, help="output side in pixels")
    p.add_argument(
        "--crop",
        choices=CROPS,
        default="center",
        help="center: centre square; focus: the square with the most detail; none: keep the aspect "
        "ratio, shorter side = size",
    )
    p.add_argument("--flip", action="store_true", help="also write a mirrored copy of every output")
    p.add_argument(
        "--split_oversized",
        action="store_true",
        help="cut images more than 1.5x longer than wide into overlapping square tiles",
    )
    p.add_argument(
        "--caption_from_filename",
        action="store_true",
        help="write <name>.txt with the words of the file name (when there is no sidecar caption)",
    )
    p.add_argument(
        "--filename_regex",
        default=None,
        help="words of the file name are the matches of this pattern (default: runs of letters)",
    )
    p.add_argument("--min_size", type=int, default=0, help="skip images whose shorter side is below this")
    p.add_argument(
        "--caption_model",
        default=None,
        help="a BLIP image-captioning folder on disk (e.g. blip-image-captioning-base, never downloaded): "
        "write DST/<name>.txt for the prepared images that have no caption",
    )
    p.add_argument(
        "--overwrite_captions",
        action="store_true",
        help="with --caption_model: replace existing captions too (sidecar and file-name ones)",
    )
    p.add_argument("--caption_batch_size", type=int, default=8, help="images per captioning forward pass")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = PreprocessOptions(
        size=args.size,
        crop=args.crop,
        flip=args.flip,
        split_oversized=args.split_oversized,
        caption_from_filename=args.caption_from_filename,
        min_size=args.min_size,
        filename_regex=args.filename_regex,
    )

    def body() -> int:
        # Load the captioner first: a bad --caption_model folder stops us before any file is written.
        captioner = (
            Captioner.load(args.caption_model, batch_size=args.caption_batch_size) if args.caption_model else None
        )
        written = preprocess_folder(args.src, args.dst, options)
        print(f"wrote {len(written)} images to {args.dst}")
        if captioner is not None:
            captions = caption_files(captioner, written, overwrite=args.overwrite_captions)
            print(f"captioned {len(captions)} of them with {args.caption_model}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
