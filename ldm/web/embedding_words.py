"""The words of the embeddings folder, for Generate's picker and its misfit check.

Each file is read through the project's safe readers (ldm/embeddings: no pickle runs) and remembered by
(name, size, mtime), so a page load does not re-read an unchanged folder. A file that cannot be read is
listed with the reason instead of its words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ldm.embeddings import read_embedding_file
from ldm.embeddings.families import family_of_width
from ldm.embeddings.library import prompt_name
from ldm.errors import LdmUserError
from ldm.web.embedding_files import listed  # one rule for which files the library shows


@dataclass(frozen=True)
class FolderEmbedding:
    file: str  # the id: a file name in the embeddings folder
    words: tuple[str, ...]  # what a prompt writes to use it
    vectors: int
    width: int
    family: str | None  # the model family its width fits, e.g. "SD 1.x (CLIP ViT-L)"
    error: str | None = None  # why it cannot be read (then words is empty)

    def as_json(self) -> dict:
        return {
            "file": self.file,
            "words": list(self.words),
            "vectors": self.vectors,
            "width": self.width,
            "family": self.family,
            "error": self.error,
        }


_CACHE: dict[tuple[str, int, int], FolderEmbedding] = {}


def describe_file(path: Path) -> FolderEmbedding:
    """One file's words, vector count, width and family (cached by size and mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        try:
            terms = read_embedding_file(path)
            words = tuple(prompt_name(t) for t in terms)  # the library's own naming rule
            width = terms[0].dim
            _CACHE[key] = FolderEmbedding(
                path.name, words, sum(t.num_vectors for t in terms), width, family_of_width(width)
            )
        except (LdmUserError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _CACHE[key] = FolderEmbedding(path.name, (), 0, 0, None, reason)
    return _CACHE[key]


def folder_embeddings(folder: Path) -> list[FolderEmbedding]:
    """Every embedding file at the top of `folder`, by name."""
    if not folder.is_dir():
        return []
    return [describe_file(p) for p in sorted(folder.iterdir(), key=lambda p: p.name.lower()) if listed(p)]


def uses_word(prompt: str, word: str) -> bool:
    """Whether `prompt` writes `word` as a word of its own (case-insensitive, as CLIP lowercases)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", prompt, flags=re.IGNORECASE) is not None
