#!/usr/bin/env python
"""Train the toy world's base model (autoencoder, UNet and CLIP text transformer) and its attribute
classifier from scratch with a fixed seed, then write models/toy-world/{toy-world,classifier}.safetensors
and MANIFEST.json (sha256 sums, this command, the figures). About 52 minutes on 2 CPU cores.

--xl trains the SDXL-shaped toy instead (configs/toy-world/xl-inference.yaml -> models/toy-world-xl/
toy-world-xl.safetensors): its UNet and both text encoders, on the SD 1.x toy's autoencoder and with its
classifier (models/toy-world/), which it reuses rather than retrains."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from ldm.cli import configure_logging, run_cli
from ldm.errors import ConfigError
from ldm.toy.base_model import BaseTrainingSettings, train_base_model


def parse_args(argv=None) -> argparse.Namespace:
    d = BaseTrainingSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--xl",
        action="store_true",
        help="the SDXL-shaped toy: its config and folder, the SD 1.x toy's autoencoder and classifier",
    )
    p.add_argument("--config", default=None, help="the toy model's architecture (default: configs/toy-world/...)")
    p.add_argument("--out", default=None, help="folder for the weights and MANIFEST.json (default: models/...)")
    p.add_argument("--vae_from", default=None, help="take the autoencoder from this toy model (--xl: the SD 1.x toy)")
    p.add_argument("--classifier_from", default=None, help="take this classifier (--xl: the SD 1.x toy's)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pool_size", type=int, default=d.pool_size, help="rendered training scenes")
    p.add_argument("--vae_steps", type=int, default=d.vae_steps)
    p.add_argument("--steps", type=int, default=d.diffusion.steps, help="UNet + text transformer steps")
    p.add_argument("--classifier_steps", type=int, default=d.classifier_steps)
    p.add_argument("--classifier_pool", type=int, default=d.classifier_pool, help="renders the classifier trains on")
    p.add_argument("--check_renders", type=int, default=d.check_renders, help="fresh renders for its accuracy")
    p.add_argument(
        "--check_concepts",
        type=int,
        default=d.check_concepts,
        help="(shape, colour) pairs sampled for the true-words check",
    )
    p.add_argument("--check_samples", type=int, default=d.check_samples, help="samples per checked pair")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p.parse_args(argv)


SD1_DEFAULTS = dict(config="configs/toy-world/inference.yaml", out="models/toy-world")
XL_DEFAULTS = dict(
    config="configs/toy-world/xl-inference.yaml",
    out="models/toy-world-xl",
    vae_from="models/toy-world/toy-world.safetensors",
    classifier_from="models/toy-world/classifier.safetensors",
    weights="toy-world-xl.safetensors",
)


def fill_defaults(args: argparse.Namespace) -> dict:
    """Unset paths take the model shape's defaults; returns the shape's defaults."""
    defaults = XL_DEFAULTS if args.xl else SD1_DEFAULTS
    for key in ("config", "out", "vae_from", "classifier_from"):
        if getattr(args, key) is None:
            setattr(args, key, defaults.get(key))
    return defaults


def main(argv=None) -> int:
    args = parse_args(argv)
    defaults = fill_defaults(args)
    configure_logging(args.verbose)

    def body() -> int:
        for name in (
            "pool_size",
            "vae_steps",
            "steps",
            "classifier_steps",
            "classifier_pool",
            "check_renders",
            "check_concepts",
            "check_samples",
        ):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}")
        if not Path(args.config).is_file():
            raise ConfigError(
                f"--config {args.config} does not exist; the toy models are configs/toy-world/inference.yaml "
                "and (--xl) configs/toy-world/xl-inference.yaml"
            )
        for flag in ("vae_from", "classifier_from"):
            if getattr(args, flag) and not Path(getattr(args, flag)).is_file():
                raise ConfigError(
                    f"--{flag} {getattr(args, flag)} does not exist; train the SD 1.x toy first "
                    "(python scripts/train_toy_world.py) or pass another file"
                )
        if args.threads:
            torch.set_num_threads(args.threads)
        settings = BaseTrainingSettings(
            seed=args.seed,
            pool_size=args.pool_size,
            vae_steps=args.vae_steps,
            classifier_steps=args.classifier_steps,
            classifier_pool=args.classifier_pool,
            check_renders=args.check_renders,
            check_concepts=args.check_concepts,
            check_samples=args.check_samples,
            vae_from=args.vae_from,
            classifier_from=args.classifier_from,
        )
        settings.diffusion.steps = args.steps
        command = "python scripts/train_toy_world.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        weights = defaults.get("weights", "toy-world.safetensors")
        figures = train_base_model(args.config, args.out, settings, command.strip(), weights)
        print(json.dumps(figures, indent=2))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
