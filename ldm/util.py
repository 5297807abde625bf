"""Config instantiation (`target:`/`params:` nodes) and seeding."""

from __future__ import annotations

import importlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ldm.config_aliases import resolve_target
from ldm.errors import ConfigError


def get_obj_from_str(string: str) -> Any:
    """'pkg.module.Name' -> the object, with a one-line error naming what could not be found."""
    module_name, _, attr = string.rpartition(".")
    if not module_name:
        raise ConfigError(f"target {string!r} is not a dotted path like 'ldm.models.diffusion.ddpm.LatentDiffusion'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"target {string!r}: module {module_name!r} cannot be imported ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"target {string!r}: {module_name!r} has no {attr!r}") from None


def instantiate_from_config(config: Mapping[str, Any]) -> Any:
    """Build `target(**params)` from an OmegaConf/dict node, as the CompVis configs expect (sgm's target
    names through ldm.config_aliases)."""
    if config in ("__is_first_stage__", "__is_unconditional__"):
        return None
    if not isinstance(config, Mapping) and not hasattr(config, "get"):
        raise ConfigError(f"expected a config node with 'target', got {type(config).__name__}: {config!r}")
    if "target" not in config:
        raise ConfigError(f"config node has no 'target' key (keys: {', '.join(map(str, config.keys())) or 'none'})")
    params = config.get("params") or {}
    target = get_obj_from_str(resolve_target(str(config["target"])))
    try:
        return target(**dict(params))
    except TypeError as exc:
        if "argument" not in str(exc):  # only wrong/missing keyword arguments are the config's fault
            raise
        raise ConfigError(f"{config['target']}: {exc}; fix its params in the config") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
