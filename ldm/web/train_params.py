"""The Train page's form as main.py's command line: every field checked (one line naming it), then the
exact arguments a user would type, so a run started from the browser is a run of the command line."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldm.data import captions as cap
from ldm.training.lr_schedule import MAX_LR, parse_a1111_schedule
from ldm.validate import finite_float, int_in_range
from ldm.web.catalog import ModelEntry, get_model
from ldm.web.security import WebInputError, check_id
from ldm.web.settings import WebSettings

TEMPLATES = ("object", "style", "filewords", "custom")
FILEWORDS_TEMPLATE = f"{cap.NAME}, {cap.FILEWORDS}"  # A1111's "[name], [filewords]"
TEMPLATE_FILE = "templates.txt"  # in the run folder, for the filewords and custom templates
IMAGE_LOGGER = "lightning.callbacks.image_logger.params"
PLACEHOLDER = re.compile(r"[^\s,\"'=]{1,40}")
MAX_TEXT = 1000


@dataclass(frozen=True)
class TrainParams:
    model: ModelEntry
    concept: str
    name: str
    placeholder: str
    init_word: str
    vectors: int
    learning_rate: str  # a number, or an A1111 schedule string "0.005:100, 1e-3:1000, 1e-5"
    scale_lr: bool
    batch_size: int
    max_steps: int
    template: str
    custom_templates: tuple[str, ...]
    preview_prompt: str
    preview_negative: str
    preview_seed: int
    save_every: int
    preview_steps: int | None = None  # sampler steps of a preview grid (None: the config's)
    preview_images: int | None = None  # images per preview grid (None: the config's)

    @property
    def is_schedule(self) -> bool:
        return ":" in self.learning_rate or "," in self.learning_rate

    def templates(self) -> list[str] | None:
        """The template lines written to the run's templates.txt; None keeps the config's own templates."""
        if self.template == "filewords":
            return [FILEWORDS_TEMPLATE]
        if self.template == "custom":
            return list(self.custom_templates)
        return None


def _text(form: Mapping[str, Any], key: str, what: str, default: str = "", required: bool = False) -> str:
    value = form.get(key, default)
    value = default if value is None else str(value).strip()
    if required and not value:
        raise WebInputError(f"{what} is empty; fill it in")
    if len(value) > MAX_TEXT:
        raise WebInputError(f"{what} is {len(value)} characters long; keep it under {MAX_TEXT}")
    if "${" in value or ("\n" in value and key != "custom_templates"):
        raise WebInputError(
            f"{what} {value[:40]!r} holds '${{' or a line break, which the config cannot keep; remove it"
        )
    return value


def _flag(form: Mapping[str, Any], key: str, default: bool) -> bool:
    value = form.get(key, default)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "on", "yes")


def _learning_rate(text: str) -> str:
    if ":" in text or "," in text:
        parse_a1111_schedule(text)  # ConfigError names the piece it cannot read
        return text
    return repr(finite_float("learning rate", text, 0, MAX_LR, lo_open=True))


def parse_params(settings: WebSettings, form: Mapping[str, Any]) -> TrainParams:
    """The form's values, each checked; a WebInputError/ConfigError names the first bad field and the fix."""
    model = get_model(settings, _text(form, "model", "model", required=True))
    if model.finetune_config is None:
        raise WebInputError(
            f"model {model.id!r} has no training config; put a {model.weights.stem}.finetune.yaml beside it"
        )
    concept = check_id(_text(form, "concept", "concept", required=True), "concept")
    if not (settings.data_root / concept).is_dir():
        raise WebInputError(
            f"concept {concept!r} is not a folder of {settings.data_root.name}/; make it on the Dataset page"
        )
    placeholder = _text(form, "placeholder", "placeholder", "*") or "*"
    if not PLACEHOLDER.fullmatch(placeholder):
        raise WebInputError(
            f"placeholder {placeholder!r} must be one word without spaces, commas or quotes, e.g. <my-cat>"
        )
    template = _text(form, "template", "template", "object")
    if template not in TEMPLATES:
        raise WebInputError(f"template {template!r} is unknown; choose one of: {', '.join(TEMPLATES)}")
    custom = tuple(line.strip() for line in _text(form, "custom_templates", "custom templates").splitlines())
    custom = tuple(line for line in custom if line)
    if template == "custom":
        if not custom:
            raise WebInputError("custom templates are empty; write one template per line using [name] and [filewords]")
        cap.validate_templates(list(custom), "custom templates")
    return TrainParams(
        model=model,
        concept=concept,
        name=check_id(_text(form, "name", "run name", concept) or concept, "run name"),
        placeholder=placeholder,
        init_word=_text(form, "init_word", "init word", required=True),
        vectors=int_in_range("vectors per token", form.get("vectors", 1), 1, 75),
        learning_rate=_learning_rate(_text(form, "learning_rate", "learning rate", required=True)),
        scale_lr=_flag(form, "scale_lr", False),
        batch_size=int_in_range("batch size", form.get("batch_size", 1), 1, 64),
        max_steps=int_in_range("max steps", form.get("max_steps", 400), 1, 1_000_000),
        template=template,
        custom_templates=custom,
        preview_prompt=_text(form, "preview_prompt", "preview prompt", f"a photo of {placeholder}"),
        preview_negative=_text(form, "preview_negative", "negative prompt"),
        preview_seed=int_in_range("preview seed", form.get("preview_seed", 0), 0, 2**32 - 1),
        save_every=int_in_range("save every", form.get("save_every", 100), 1, 1_000_000),
        preview_steps=_optional_int(form, "preview_steps", "preview steps", 1, 1000),
        preview_images=_optional_int(form, "preview_images", "preview images", 1, 16),
    )


def _optional_int(form: Mapping[str, Any], key: str, what: str, lo: int, hi: int) -> int | None:
    value = form.get(key)
    if value is None or str(value).strip() == "":
        return None
    return int_in_range(what, value, lo, hi)


def _quoted(value: str) -> str:
    """A string for a `key=value` override, read back as that exact string (JSON is a YAML double-quoted scalar)."""
    return json.dumps(value)


def _relative(settings: WebSettings, path: Path) -> str:
    """A path as the user would type it in the project folder (main.py runs there); absolute when outside."""
    try:
        return path.relative_to(settings.root).as_posix()
    except ValueError:
        return str(path)


def training_config(params: TrainParams) -> tuple[Path, list[str]]:
    """The --base config and the overrides that make its dataset a style one when the model has no style config."""
    if params.template == "style" and params.model.finetune_style_config is not None:
        return params.model.finetune_style_config, []
    assert params.model.finetune_config is not None  # parse_params refused a model without one
    if params.template != "style":
        return params.model.finetune_config, []
    # The style dataset's own templates, not the object config's list
    return params.model.finetune_config, [
        "data.params.train.target=ldm.data.personalized_style.PersonalizedBase",
        "data.params.train.params.templates=null",
    ]


def main_args(settings: WebSettings, params: TrainParams, logdir: Path) -> list[str]:
    """main.py's arguments for a new run in `logdir` (the folder run_name would make; see TrainingRunner)."""
    base, style_overrides = training_config(params)
    args = ["--base", _relative(settings, base), "-t", "--actual_resume", _relative(settings, params.model.weights)]
    args += ["-n", params.name, "--data_root", _relative(settings, settings.data_root / params.concept)]
    args += ["--placeholder_string", params.placeholder, "--init_word", params.init_word]
    args += ["--max_steps", str(params.max_steps), "--scale_lr", "true" if params.scale_lr else "false"]
    args += ["-l", _relative(settings, logdir.parent)]
    args += style_overrides
    if params.templates() is not None:
        args += [
            "data.params.train.params.templates=null",
            f"data.params.train.params.template_file={_quoted(_relative(settings, logdir / TEMPLATE_FILE))}",
        ]
    if params.is_schedule:
        args.append(f"model.params.training.lr_schedule_string={_quoted(params.learning_rate)}")
    else:
        args.append(f"model.base_learning_rate={params.learning_rate}")
    args += [
        f"model.params.personalization_config.params.num_vectors_per_token={params.vectors}",
        f"data.params.batch_size={params.batch_size}",
        "model.params.training.log_every_n_steps=1",  # a live loss curve
        f"lightning.modelcheckpoint.params.every_n_train_steps={params.save_every}",
        f"{IMAGE_LOGGER}.batch_frequency={params.save_every}",
        f"{IMAGE_LOGGER}.log_images_kwargs.prompt={_quoted(params.preview_prompt)}",
        f"{IMAGE_LOGGER}.log_images_kwargs.negative_prompt={_quoted(params.preview_negative)}",
        f"{IMAGE_LOGGER}.log_images_kwargs.seed={params.preview_seed}",
    ]
    if params.preview_steps is not None:
        args.append(f"{IMAGE_LOGGER}.log_images_kwargs.ddim_steps={params.preview_steps}")
    if params.preview_images is not None:
        args.append(f"{IMAGE_LOGGER}.max_images={params.preview_images}")
    return args
