"""The weights a training run starts from: never silently none.

In order: `--actual_resume FILE`; the config's `actual_resume` (a run records what it used, so `-r` finds it);
the config's `model.params.ckpt_path` (CompVis' key: a config that names its own weights, like the toy
world's). A relative config path is looked up in the working directory, then in the repository root.
With none of these the run is refused, unless the config opts in with `model.params.random_init: true`
(tests that want random networks).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RANDOM_INIT = "model.params.random_init"
CKPT_PATH = "model.params.ckpt_path"


def _existing(where: str, value: object, search_root: bool) -> str:
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() or not search_root or Path.cwd() == ROOT else [path, ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    looked = f" (looked in {Path.cwd()} and {ROOT})" if len(candidates) > 1 else ""
    raise ConfigError(f"{where} {value}: no such checkpoint file{looked}")


def random_init_requested(config: DictConfig) -> bool:
    value = OmegaConf.select(config, RANDOM_INIT, default=False)
    if not isinstance(value, bool):
        raise ConfigError(f"{RANDOM_INIT}={value!r} is not true or false")
    return value


def resolve_start_weights(config: DictConfig, cli_path: str | None) -> str | None:
    """The checkpoint file to start from (checked to exist), or None for an explicit random_init run."""
    named = [
        ("--actual_resume", cli_path, False),
        ("actual_resume", config.get("actual_resume"), True),
        (CKPT_PATH, OmegaConf.select(config, CKPT_PATH), True),
    ]
    where, value, search_root = next(((w, v, s) for w, v, s in named if v), (None, None, False))
    random_init = random_init_requested(config)
    if where is None:
        if random_init:
            return None
        raise ConfigError(
            "no weights to train from: pass --actual_resume <Stable Diffusion .ckpt/.safetensors> "
            f"(or name them in the config as {CKPT_PATH}; {RANDOM_INIT}: true trains random networks, for tests)"
        )
    if random_init:
        raise ConfigError(f"{RANDOM_INIT}: true, but {where} {value} gives weights; drop one of the two")
    return _existing(where, value, search_root)
