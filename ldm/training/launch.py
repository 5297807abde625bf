"""Turn main.py's arguments into a configured Lightning run: merged config, run directory, trainer.

Everything that can be wrong with the input is checked before the run directory is created, so a
bad command line writes nothing.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ldm.errors import CheckpointError, ConfigError
from ldm.training.config_files import merge_configs
from ldm.training.config_numbers import validate_numbers
from ldm.training.resume_policy import check_unfinished, run_scale_lr, run_seed
from ldm.training.start_weights import resolve_start_weights

log = logging.getLogger(__name__)


def parse_gpus(value: str | None) -> list[int] | None:
    """'0,' / '0' / '0,1' are GPU indices (unlike Lightning's int form); ''/None/'cpu' mean the CPU."""
    if value is None or str(value).strip().lower() in ("", "cpu", "none"):
        return None
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--gpus {value!r} is not a list of GPU indices; write e.g. '0,' or '0,1' (or omit for CPU)")
    return sorted({int(p) for p in parts})


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return list(value)
    return [value]


def apply_cli(config: DictConfig, args: Any) -> DictConfig:
    """Route the paper's flags into the config so the model AND the dataset see the same values."""
    model_p = config.model.params
    personal = model_p.get("personalization_config")
    if personal is None:
        raise ConfigError(
            "the config has no model.params.personalization_config; use configs/stable-diffusion/v1-finetune.yaml"
        )
    personal.params = personal.get("params") or {}
    train = config.data.params.train
    train.params = train.get("params") or {}
    placeholders = _as_list(args.placeholder_string) or _as_list(personal.params.get("placeholder_strings")) or ["*"]
    inits = _as_list(args.init_word) or _as_list(personal.params.get("initializer_words"))
    roots = _as_list(args.data_root) or _as_list(train.params.get("data_root"))
    if not roots:
        raise ConfigError("no training images: pass --data_root training_data/<concept>")
    if len(roots) > 1 and len(roots) != len(placeholders):
        raise ConfigError(
            f"{len(roots)} --data_root folders but {len(placeholders)} placeholders; "
            "give one --placeholder_string (and --init_word) per folder"
        )
    if inits and len(inits) != len(placeholders):
        raise ConfigError(
            f"{len(inits)} --init_word values for {len(placeholders)} placeholders; give one per placeholder"
        )
    personal.params.placeholder_strings = placeholders
    if inits:
        personal.params.initializer_words = inits
    train.params.data_root = roots[0] if len(roots) == 1 else roots
    train.params.placeholder_token = placeholders[0] if len(roots) == 1 else placeholders
    val = config.data.params.get("validation")
    if val is not None:
        val.params = val.get("params") or {}
        val.params.data_root, val.params.placeholder_token = train.params.data_root, train.params.placeholder_token
    model_p.training = model_p.get("training") or {}
    resuming = bool(getattr(args, "resume", ""))  # -r keeps the seed and lr rule its run recorded
    model_p.training.seed = config.data.params.seed = run_seed(config, args.seed, resuming)
    config.scale_lr = run_scale_lr(config, getattr(args, "scale_lr", None), resuming)
    if args.precision:
        model_p.training.network_precision = args.precision
    lightning = config.setdefault("lightning", {})
    trainer = lightning.setdefault("trainer", {})
    if args.max_steps is not None:
        trainer.max_steps = int(args.max_steps)
    try:
        steps = int(trainer.get("max_steps", 0) or 0)
    except (TypeError, ValueError):
        steps = 0
    if steps <= 0:
        raise ConfigError(f"max_steps must be positive, got {trainer.get('max_steps')}; pass --max_steps N")
    validate_numbers(config)
    return config


def check_inputs(args: Any, overrides: list[str], training: bool = True) -> tuple[ResumeInfo | None, DictConfig]:
    """Everything main.py is given, checked before anything is built or written (and before Lightning is
    imported): the -r checkpoint, the configs and overrides, every number, and the weights to start from."""
    resume = resolve_resume(args.resume) if args.resume else None
    base = (resume.configs if resume else []) + list(args.base)
    if not base:
        raise ConfigError("no config: pass --base configs/stable-diffusion/v1-finetune.yaml (or -r <logdir>)")
    config = apply_cli(merge_configs(base, overrides), args)
    if training:
        if resume:  # nothing left to train: say so before anything is built
            check_unfinished(resume.logdir, resume.step, int(config.lightning.trainer.max_steps))
        parse_gpus(args.gpus)
        weights = resolve_start_weights(config, args.actual_resume)
        if weights:
            config.actual_resume = weights  # recorded in the run's config, so -r starts from the same file
    return resume, config


def run_name(data_root: Any, name: str, postfix: str = "", now: str | None = None) -> tuple[str, str]:
    """logs/<data folder name><timestamp>_<name><postfix>, as the paper code names runs."""
    now = now or datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    roots = _as_list(data_root)
    prefix = os.path.basename(os.path.normpath(str(roots[0]))) if roots else ""
    return now, f"{prefix}{now}_{name}{postfix}" if name else f"{prefix}{now}{postfix}"


@dataclass
class ResumeInfo:
    logdir: Path
    ckpt: Path
    configs: list[str]
    step: int = 0  # the optimizer step the checkpoint was saved at


def resolve_resume(resume: str) -> ResumeInfo:
    """`-r` takes a run directory or a checkpoint inside it; the run's saved configs come first."""
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"-r {resume}: no such run directory or checkpoint")
    if path.is_file():
        logdir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        ckpt = path
    else:
        logdir, ckpt = path, path / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"-r {resume}: {ckpt} does not exist (the run saved no resumable checkpoint yet)")
    configs = sorted(str(p) for p in (logdir / "configs").glob("*-project.yaml"))
    if not configs:
        raise ConfigError(f"-r {resume}: {logdir / 'configs'} holds no *-project.yaml to rebuild the run from")
    return ResumeInfo(logdir, ckpt, configs[-1:], _saved_step(resume, ckpt))


def _saved_step(resume: str, ckpt: Path) -> int:
    """Read the checkpoint now, before anything is built: a corrupt file is one line, not a Trainer banner first."""
    from ldm.safe_load import safe_torch_load

    try:
        state = safe_torch_load(ckpt)
    except CheckpointError as exc:
        raise CheckpointError(
            f"-r {resume}: {exc}".removesuffix("; pass a .ckpt/.pt/.safetensors weights file")
            + "; start a new run from its checkpoints/embeddings.pt (SDXL: embeddings.safetensors) "
            "with --embedding_manager_ckpt"
        ) from None
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int) or step < 0 or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"-r {resume}: {ckpt} is not a training checkpoint of this project (no global_step)")
    return step
