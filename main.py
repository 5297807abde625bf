#!/usr/bin/env python
"""Training entry point (textual inversion). Merges the --base configs and dotlist overrides; the
training loop itself is built on ldm/ (LatentDiffusion + EmbeddingManager) and arrives with the
training work. For now this prints the merged config with --print_config."""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from ldm.errors import LdmUserError


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-b", "--base", nargs="*", default=[], metavar="config.yaml",
                   help="configs merged left to right; later ones override earlier ones")
    p.add_argument("--print_config", action="store_true", help="print the merged config and exit")
    return p.parse_known_args(argv)


def merged_config(base: list[str], overrides: list[str]):
    from pathlib import Path

    for path in base:
        if not Path(path).is_file():
            raise LdmUserError(f"--base {path}: no such config file")
    configs = [OmegaConf.load(path) for path in base]
    return OmegaConf.merge(*configs, OmegaConf.from_dotlist(overrides))


def main(argv=None) -> int:
    args, unknown = parse_args(argv)
    try:
        config = merged_config(args.base, unknown)
    except LdmUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(config))
        return 0
    print("error: training is not available yet; use --print_config to inspect the merged config", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
