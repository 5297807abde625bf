"""Read main.py's `--base` YAML files and `key=value` overrides into one config, or one line naming the problem.

A syntax error names the file and the line; a file whose root is not a mapping, an override that is not
`key=value`, and sections the run cannot do without are refused here, before anything is built.
"""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ldm.errors import ConfigError

# Sections every training config has; each is a mapping.
REQUIRED = ("model", "model.params", "data", "data.params", "data.params.train")


def _yaml_error(where: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        problem = f"{problem}, {context} that starts at line {context_mark.line + 1}"
    line = f"line {mark.line + 1}: " if mark is not None else ""
    return ConfigError(f"{where}: {line}{problem} (YAML syntax)")


_KINDS = {yaml.ScalarNode: "single value", yaml.SequenceNode: "list"}


def load_config_file(path: str) -> DictConfig:
    """One `--base` file as a mapping; ConfigError `--base <file>: line N: <why>` otherwise."""
    where = f"--base {path}"
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{where}: no such config file")
    try:
        text = file.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # the node tree only: where the root starts, what it is
        if root is None:
            raise ConfigError(f"{where}: the file is empty; a config is a mapping such as model: ... data: ...")
        if not isinstance(root, yaml.MappingNode):
            kind = _KINDS.get(type(root), "value")
            raise ConfigError(
                f"{where}: line {root.start_mark.line + 1}: the root is a {kind}, not a mapping; "
                "a config looks like model: ... data: ..."
            )
        return OmegaConf.load(io.StringIO(text))  # OmegaConf's own YAML rules (1e-3 is a float, no duplicate keys)
    except yaml.YAMLError as exc:
        raise _yaml_error(where, exc) from None
    except (OSError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{where}: cannot read it ({str(exc).splitlines()[0]})") from None


def parse_overrides(overrides: list[str]) -> DictConfig:
    """`a.b=value` arguments as a config; anything else is an unknown argument."""
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        raise ConfigError(f"unknown argument {bad[0]!r}; config overrides look like data.params.batch_size=4")
    out = OmegaConf.create()
    for item in overrides:
        try:
            out = OmegaConf.merge(out, OmegaConf.from_dotlist([item]))
        except (yaml.YAMLError, OmegaConfBaseException, ValueError, TypeError) as exc:
            why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"override {item!r}: {why}; write key=value, e.g. data.params.batch_size=4") from None
    return out


def merge_configs(base: list[str], overrides: list[str]) -> DictConfig:
    """Merge the `--base` files left to right, then the overrides; check the sections a run needs."""
    parts = [(f"--base {p}", load_config_file(p)) for p in base]
    parts.append(("the overrides", parse_overrides(overrides)))
    config = OmegaConf.create()
    for where, part in parts:
        try:
            config = OmegaConf.merge(config, part)
        except (OmegaConfBaseException, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{where}: does not merge with the configs before it ({str(exc).splitlines()[0]})"
            ) from None
    try:
        OmegaConf.resolve(config)  # a broken ${...} interpolation fails here, not mid-run
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{', '.join(base)}: {str(exc).splitlines()[0]}") from None
    for key in REQUIRED:
        if not isinstance(OmegaConf.select(config, key), DictConfig):
            raise ConfigError(
                f"{', '.join(base)}: no {key} section; start from configs/stable-diffusion/v1-finetune.yaml"
            )
    return config
