"""Editing a dataset's captions as tags, like the Dataset Tag Editor: pure functions over {image stem: caption}.

A caption is comma-separated tags ("a photo of a star, purple, centered"); tags compare after collapsing
whitespace, case-sensitively. Each batch edit returns a new mapping holding only the captions it changed,
so the caller writes just those (`write_captions`, atomically, one `<stem>.txt` each).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from ldm.errors import ConfigError
from ldm.fileio import atomic_path

Captions = Mapping[str, str]
MAX_CAPTION_CHARS = 2000  # far beyond the 75 tokens the text encoder reads; stops a pasted essay
WHERE = ("front", "back")


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def split_tags(caption: str) -> list[str]:
    """The tags of a caption, in order, whitespace collapsed, empty ones dropped."""
    return [tag for tag in (_clean(part) for part in caption.split(",")) if tag]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def check_tag(tag: str, what: str = "tag") -> str:
    """A tag to add, remove or replace with: one non-empty phrase without commas."""
    cleaned = _clean(tag) if isinstance(tag, str) else ""
    if not cleaned:
        raise ConfigError(f"{what} is empty; type the tag, e.g. 'purple'")
    if "," in cleaned:
        raise ConfigError(f"{what} {cleaned!r} holds a comma; edit one tag at a time")
    if len(cleaned) > MAX_CAPTION_CHARS:
        raise ConfigError(f"{what} is {len(cleaned)} characters long; keep it under {MAX_CAPTION_CHARS}")
    return cleaned


def check_caption(text: str, what: str = "caption") -> str:
    """A whole caption typed by the user: one line (newlines become spaces), not absurdly long."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text")
    cleaned = _clean(text)
    if len(cleaned) > MAX_CAPTION_CHARS:
        raise ConfigError(f"{what} is {len(cleaned)} characters long; keep it under {MAX_CAPTION_CHARS}")
    return cleaned


def _selected(captions: Captions, stems: Collection[str] | None) -> list[str]:
    """The stems an edit applies to: all, or the chosen ones (each must be in the set)."""
    if stems is None:
        return list(captions)
    unknown = sorted(set(stems) - set(captions))
    if unknown:
        raise ConfigError(f"image {unknown[0]!r} is not in this dataset; pick images from the grid")
    return [stem for stem in captions if stem in set(stems)]


def _edit(captions: Captions, stems: Collection[str] | None, change) -> dict[str, str]:
    out = {}
    for stem in _selected(captions, stems):
        tags = split_tags(captions[stem])
        changed = change(tags)
        if changed != tags:  # an untouched caption keeps its own spacing
            out[stem] = join_tags(changed)
    return out


def remove_tag(captions: Captions, tag: str, stems: Collection[str] | None = None) -> dict[str, str]:
    """Drop `tag` from every (selected) caption."""
    tag = check_tag(tag)
    return _edit(captions, stems, lambda tags: [t for t in tags if t != tag])


def replace_tag(captions: Captions, old: str, new: str, stems: Collection[str] | None = None) -> dict[str, str]:
    """Replace `old` by `new`; where `new` is already present, `old` is just dropped (no duplicate)."""
    old, new = check_tag(old, "tag to replace"), check_tag(new, "replacement tag")

    def change(tags: list[str]) -> list[str]:
        if old not in tags:
            return tags
        out: list[str] = []
        for t in tags:
            t = new if t == old else t
            if t != new or new not in out:
                out.append(t)
        return out

    return _edit(captions, stems, change)


def add_tag(captions: Captions, tag: str, where: str = "back", stems: Collection[str] | None = None) -> dict[str, str]:
    """Add `tag` at the front or the back of every (selected) caption that lacks it."""
    tag = check_tag(tag)
    if where not in WHERE:
        raise ConfigError(f"where {where!r} is unknown; choose front or back")

    def change(tags: list[str]) -> list[str]:
        if tag in tags:
            return tags
        return [tag, *tags] if where == "front" else [*tags, tag]

    return _edit(captions, stems, change)


def set_caption(captions: Captions, stem: str, text: str) -> dict[str, str]:
    """One caption replaced by hand (an empty one removes the caption's text)."""
    _selected(captions, [stem])
    text = check_caption(text)
    return {} if captions[stem] == text else {stem: text}


def tag_counts(captions: Captions) -> list[tuple[str, int]]:
    """Every tag with the number of captions that hold it, most common first, then by name."""
    counts = Counter(tag for caption in captions.values() for tag in dict.fromkeys(split_tags(caption)))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def read_captions(folder: Path, stems: Iterable[str]) -> dict[str, str]:
    """{stem: caption} from `<stem>.txt` in `folder`; "" where an image has no caption file."""
    out = {}
    for stem in stems:
        path = folder / f"{stem}.txt"
        try:
            out[stem] = _clean(path.read_text(encoding="utf-8")) if path.is_file() else ""
        except UnicodeDecodeError:
            raise ConfigError(f"caption file {path} is not UTF-8 text; re-save it as UTF-8") from None
    return out


def write_captions(folder: Path, changes: Captions) -> list[Path]:
    """Write each changed caption to `<stem>.txt` atomically; returns the files written."""
    written = []
    for stem, text in changes.items():
        with atomic_path(folder / f"{stem}.txt") as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        written.append(folder / f"{stem}.txt")
    return written
