"""A concept's captions on the Dataset page: the grid's view, one-by-one and batch tag edits, and captions
proposed by the configured BLIP model (settings.caption_model; loaded once, kept for the app's life)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ldm.data import caption_edit
from ldm.data.captioning import Captioner, caption_files
from ldm.web.datasets import concept_dir, image_file, image_files
from ldm.web.machine import require_idle
from ldm.web.security import WebInputError
from ldm.web.settings import WebSettings
from ldm.web.state import WebState

TAG_ACTIONS = ("remove", "replace", "add")


def dataset_view(settings: WebSettings, concept: str) -> dict:
    """The concept's images (file name and caption, in name order) and its tags with their counts."""
    images = image_files(concept_dir(settings, concept))
    captions = caption_edit.read_captions(concept_dir(settings, concept), [p.stem for p in images])
    return {
        "concept": concept,
        "images": [{"file": p.name, "caption": captions[p.stem]} for p in images],
        "tags": [[tag, count] for tag, count in caption_edit.tag_counts(captions)],
    }


def _captions(settings: WebSettings, concept: str) -> dict[str, str]:
    folder = concept_dir(settings, concept)
    return caption_edit.read_captions(folder, [p.stem for p in image_files(folder)])


def edit_caption(settings: WebSettings, concept: str, file: str, text: str) -> str:
    """Replace one image's caption; returns the caption as stored (whitespace collapsed)."""
    stem = image_file(settings, concept, file).stem
    changes = caption_edit.set_caption(_captions(settings, concept), stem, text)
    caption_edit.write_captions(concept_dir(settings, concept), changes)
    return changes.get(stem, caption_edit.check_caption(text))


def edit_tags(
    settings: WebSettings,
    concept: str,
    action: str,
    tag: str,
    new: str | None = None,
    where: str = "back",
    files: Sequence[str] | None = None,
) -> int:
    """Remove / replace / add a tag across the concept, or across the chosen images; returns how many
    captions changed."""
    if action not in TAG_ACTIONS:
        raise WebInputError(f"action {action!r} is unknown; choose one of: {', '.join(TAG_ACTIONS)}")
    stems = None if files is None else [image_file(settings, concept, f).stem for f in files]
    captions = _captions(settings, concept)
    if action == "remove":
        changes = caption_edit.remove_tag(captions, tag, stems)
    elif action == "replace":
        changes = caption_edit.replace_tag(captions, tag, new or "", stems)
    else:
        changes = caption_edit.add_tag(captions, tag, where, stems)
    caption_edit.write_captions(concept_dir(settings, concept), changes)
    return len(changes)


class CaptionService:
    """The configured captioning model, loaded on first use; one captioning at a time."""

    def __init__(self, state: WebState):
        self.settings = state.settings
        self._captioner: Captioner | None = None
        self._lock = threading.Lock()

    def caption_concept(self, concept: str, overwrite: bool = False) -> int:
        """Write captions for the concept's images without one (all with `overwrite`); returns how many."""
        if self.settings.caption_model is None:
            raise WebInputError("no captioning model is configured; start the UI with --caption_model DIR", 409)
        images = image_files(concept_dir(self.settings, concept))
        if not images:
            raise WebInputError(f"concept {concept!r} has no images; upload photos first")
        if not self._lock.acquire(blocking=False):
            raise WebInputError("a captioning run is in progress; wait for it to finish", 409)
        try:
            if self._captioner is None:
                self._captioner = Captioner.load(self.settings.caption_model)
            return len(caption_files(self._captioner, images, overwrite=overwrite))
        finally:
            self._lock.release()


def caption_with_model(state: WebState, concept: str, overwrite: bool = False) -> int:
    """Caption a concept with the configured model, unless a training run holds the machine (409)."""
    require_idle(state)
    return state.service("captioner", CaptionService).caption_concept(concept, overwrite)
