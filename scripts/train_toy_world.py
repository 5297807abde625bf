#!/usr/bin/env python
"""Train the toy world's base model (autoencoder, UNet and CLIP text transformer) and its attribute
classifier from scratch with a fixed seed, then write models/toy-world/{toy-world,classifier}.safetensors
and MANIFEST.json (sha256 sums, this command, the figures). About 52 minutes on 2 CPU cores."""

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
    p.add_argument("--config", default="configs/toy-world/inference.yaml", help="the toy model's architecture")
    p.add_argument("--out", default="models/toy-world", help="folder for the weights and MANIFEST.json")
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


def main(argv=None) -> int:
    args = parse_args(argv)
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
                f"--config {args.config} does not exist; the toy model is configs/toy-world/inference.yaml"
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
        )
        settings.diffusion.steps = args.steps
        command = "python scripts/train_toy_world.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        figures = train_base_model(args.config, args.out, settings, command.strip())
        print(json.dumps(figures, indent=2))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
