"""Captions from templates: `{}` slots (built-in templates) and AUTOMATIC1111-style template files.

A template file holds one template per line; `[name]` becomes the placeholder string and `[filewords]`
the words describing the image: the sidecar caption `<image stem>.txt` when there is one, else words
taken from the image file name. With the default `filename_regex` (`DEFAULT_FILENAME_REGEX`, runs of
letters of any script) digits, `_`, `-` and punctuation only separate words:
"00012-a_photo-of cat.png" -> "a photo of cat".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ldm.errors import ConfigError

DEFAULT_FILENAME_REGEX = r"[^\W\d_]+"
NAME, FILEWORDS, SLOT = "[name]", "[filewords]", "{}"
_MARKERS = re.compile(r"\{\}|\[name\]|\[filewords\]")


def compile_filename_regex(regex: str | None) -> re.Pattern | None:
    """None -> the default pattern; "" -> no pattern (the whole stem, `_` read as a space)."""
    if regex == "":
        return None
    regex = DEFAULT_FILENAME_REGEX if regex is None else regex
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ConfigError(
            f"filename_regex {regex!r} is not a valid regular expression ({exc}); fix the pattern"
        ) from None


def filename_words(name: str | Path, regex: str | re.Pattern | None = None, join: str = " ") -> str:
    """Words of a file name without its extension: all matches of `regex`, joined with `join`."""
    stem = Path(name).stem
    pattern = regex if isinstance(regex, re.Pattern) else compile_filename_regex(regex)
    if pattern is None:
        return " ".join(stem.replace("_", " ").split())
    return join.join(m.group(0) for m in pattern.finditer(stem) if m.group(0))


def read_sidecar(image_path: str | Path) -> str | None:
    """The caption in `<image stem>.txt` beside the image (whitespace collapsed), or None."""
    path = Path(image_path).with_suffix(".txt")
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"caption file {path} cannot be read ({exc}); save it as UTF-8 text") from None
    return " ".join(text.split())


def process_tags(text: str, rng: np.random.Generator, shuffle: bool = False, drop_out: float = 0.0) -> str:
    """Comma-separated tags: drop each with probability `drop_out`, then shuffle (both from `rng`)."""
    if not shuffle and drop_out <= 0:
        return text
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if drop_out > 0:
        keep = rng.random(len(tags)) >= drop_out
        tags = [t for t, kept in zip(tags, keep) if kept]
    if shuffle:
        tags = [tags[i] for i in rng.permutation(len(tags))]
    return ", ".join(tags)


def fill_template(template: str, placeholder: str, filewords: str = "", image_token: str | None = None) -> str:
    """Insert the placeholder (first `{}` and every `[name]`), the image token (second `{}`) and
    `[filewords]`; markers are replaced in the template's own text only, never inside inserted words."""
    slots = [placeholder, image_token or ""]
    pieces = template.split(SLOT)
    out = []
    for i, piece in enumerate(pieces):
        if i > 0:
            out.append(slots[i - 1] if i - 1 < len(slots) else "")
        out.append(_MARKERS.sub(lambda m: placeholder if m.group(0) == NAME else filewords, piece))
    text = " ".join("".join(out).split())
    # An empty [filewords] must not leave "a photo of *, " or ", ," behind.
    text = re.sub(r"(\s*,)+\s*,", ",", text)
    return text.strip(" ,")


def validate_templates(templates: Iterable[str], source: str) -> list[str]:
    """Non-empty list of strings, each with a slot for the placeholder."""
    if isinstance(templates, str):
        raise ConfigError(f"{source} must be a list of template strings, got the single string {templates!r}")
    result = [str(t) for t in templates]
    if not result:
        raise ConfigError(f"{source} has no templates; give at least one, e.g. 'a photo of a {{}}'")
    for t in result:
        if SLOT not in t and NAME not in t:
            raise ConfigError(
                f"{source}: template {t!r} has no {{}} or [name] slot, so the placeholder "
                "would never be trained; add one"
            )
        if t.count(SLOT) > 2:
            raise ConfigError(
                f"{source}: template {t!r} has {t.count(SLOT)} {{}} slots; use at most two "
                "(placeholder, per-image token)"
            )
    return result


def read_template_file(path: str | Path) -> list[str]:
    """One template per non-empty line, using [name] and [filewords]."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"template_file {path}: no such file; pass a text file with one template per line "
            "using [name] and [filewords]"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"template_file {path} cannot be read ({exc}); save it as UTF-8 text") from None
    return validate_templates([line.strip() for line in lines if line.strip()], f"template_file {path}")


def placeholder_in_templates(placeholder: str, templates: Sequence[str]) -> None:
    """Refuse a placeholder that is also an ordinary word of a template ("photo" in "a photo of a {}"):
    its learned vector would replace that word too (case-insensitive, as CLIP lower-cases)."""
    word = re.compile(r"(?<!\w)" + re.escape(placeholder) + r"(?!\w)", re.IGNORECASE)
    for template in templates:
        if word.search(_MARKERS.sub(" ", template)):
            raise ConfigError(
                f"placeholder {placeholder!r} is also a word of template {template!r}; "
                f"choose a placeholder that no template uses, e.g. '<{placeholder.strip('<>')}>'"
            )
