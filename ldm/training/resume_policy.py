"""What `-r` keeps from the run it resumes, and when there is nothing left to train.

A run's saved project config is its record. A flag the user does not repeat on `-r` takes the recorded
value, never the parser's default: a default seed over a run trained with `-s 7` made every resumed step
draw other images, flips, captions, timesteps and noise than the uninterrupted run (issue 12).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldm.errors import ConfigError

DEFAULT_SEED = 23  # the paper repository's default
DEFAULT_SCALE_LR = True
SEED_KEY = "model.params.training.seed"
SCALE_LR_KEY = "scale_lr"  # top level, beside actual_resume: the run records how its lr was derived


def _recorded(config: DictConfig, key: str, flag: str, given: object, default: object, resuming: bool) -> object:
    """The flag's value if given, else the config's record, else the default; -r refuses a changed value."""
    saved = OmegaConf.select(config, key)
    if given is None:
        return default if saved is None else saved
    if resuming and saved is not None and given != saved:
        raise ConfigError(
            f"{flag} {_text(given)}: the run being resumed trained with {flag} {_text(saved)}; a resumed run "
            f"keeps it (omit {flag}), or start a new run with -t"
        )
    return given


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_seed(config: DictConfig, given: int | None, resuming: bool) -> int:
    """The run's seed: `-s`, else the config's (a resumed run's own), else 23."""
    seed = _recorded(config, SEED_KEY, "-s", None if given is None else int(given), DEFAULT_SEED, resuming)
    return int(seed)


def run_scale_lr(config: DictConfig, given: bool | None, resuming: bool) -> bool:
    """Whether the lr is scaled by batch and devices: `--scale_lr`, else the run's record, else true."""
    value = _recorded(config, SCALE_LR_KEY, "--scale_lr", given, DEFAULT_SCALE_LR, resuming)
    if not isinstance(value, bool):
        raise ConfigError(f"{SCALE_LR_KEY}={value!r} is not true or false")
    return value


class RunFinished(Exception):
    """`-r` of a run that already reached its max_steps: nothing to train. Not an error; main.py says so."""


def check_unfinished(logdir: Path, step: int, max_steps: int) -> None:
    """Raise RunFinished (one line: where it stands, how to train further) when step >= max_steps."""
    if step >= max_steps:
        raise RunFinished(
            f"{logdir} is finished: it trained {step} steps and max_steps is {max_steps}; to train further, "
            f"resume with a larger --max_steps, e.g. python main.py -r {logdir} --max_steps {2 * max(step, 1)}"
        )
