"""EmbeddingLibrary: the named terms a prompt may use, from explicit files and an embeddings folder.

How a term is named in prompts (case-insensitive, as CLIP lowercases):
  1. the token the file keys its vectors by, when it is a readable word (has a letter or digit):
     a diffusers `{"<cat-toy>": ...}` answers to `<cat-toy>`, a paper file keyed "sks" to `sks`;
  2. else the file's `name` field (paper / A1111 `.pt` and PNG), e.g. `mycat` for `{"*": ...}, name="mycat"`;
  3. else the file stem (emb_params `.safetensors`, paper files without a name).
A file's term answers to that one name only: aliases such as the stem of `cat.pt` would hijack every
"cat" in every prompt. The exception is `*`, which users of the paper code type ("a photo of *"): it
names the one explicitly loaded term whose file token is `*` (constructor `paths`, `load`, `load_by_name`,
`add`). Folder-scanned terms never answer to `*` (a folder of A1111 files all say `*`), and when two
explicit terms could, `*` names neither and a warning asks for their names.

Explicit files raise a one-line `EmbeddingFileError` when unreadable, of the wrong width (the message
names the term's width and the model family it fits, see families.py), or clashing with another explicit
term's name. Folder files that fail are skipped with a warning naming them; a
folder term whose name is taken (by an explicit term, or an earlier file in name order) is skipped too.
`refresh()` compares the folder's (file name, mtime, size) listing and re-reads only changed files.
Only the folder's top level is scanned; hidden files and A1111 `*.preview.png` images are ignored.

SDXL (`dim` 2048, or a small SDXL-shaped model with `part_widths`): terms are one-per-file clip_l/clip_g
files and diffusers' pair, read as one term under its first file (`learned_embeds.safetensors`); its
second file is not listed on its own, and a change to either re-reads the pair. Loading either file of a
pair explicitly loads the same source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from ldm.embeddings import diffusers_pair
from ldm.embeddings.families import check_width
from ldm.embeddings.formats import embedding_source, read_embedding_file
from ldm.embeddings.loaded import EmbeddingFileError, LoadedEmbedding, check_finite
from ldm.embeddings.sdxl import SDXL_WIDTH, SDXL_WIDTHS
from ldm.errors import ConfigError, LdmUserError

log = logging.getLogger(__name__)

PathLike = str | Path
SUFFIXES = (".pt", ".safetensors", ".bin", ".png", ".pth", ".ckpt")
STAR = "*"


def _readable(text: str | None) -> bool:
    return bool(text) and any(ch.isalnum() for ch in text)


def _fold_pairs(listing: list[tuple]) -> tuple[tuple, ...]:
    """The folder listing with diffusers' SDXL pairs as one entry: the second file's (mtime, size) joins
    the first's, so a change to either re-reads the pair, and the second file is not read alone."""
    stamps = {entry[0]: entry[1:] for entry in listing}
    folded = []
    for name, *stamp in listing:
        pair = diffusers_pair.pair_of(Path(name))
        if pair is not None:
            first, second = pair[0].name, pair[1].name
            if name == second and first in stamps:
                continue
            if name == first and second in stamps:
                stamp = [*stamp, *stamps[second]]
        folded.append((name, *stamp))
    return tuple(sorted(folded))


def prompt_name(term: LoadedEmbedding) -> str:
    """The word that calls `term` in a prompt (see the module docstring for the rule)."""
    if _readable(term.token):
        return term.token
    if _readable(term.name):
        return term.name
    return Path(term.source).stem if term.source else term.name


@dataclass
class _Source:
    """One file (or in-memory term) and the named terms it gave."""

    label: str  # shown in messages: the path as found, or "memory"
    terms: list[tuple[str, LoadedEmbedding]] = field(default_factory=list)
    stamp: tuple[int, ...] = (0, 0)  # (mtime_ns, size) when read; a pair adds its second file's
    resolved: Path | None = None


class EmbeddingLibrary:
    """Named terms for prompts. `dim` is the text encoders' width (768 for SD v1, 2048 for SDXL); `part_widths`
    the widths of a two-encoder model's encoders (SDXL: (768, 1280)), to check where SDXL terms split."""

    def __init__(
        self,
        dim: int,
        paths: Sequence[PathLike] = (),
        directory: PathLike | None = None,
        part_widths: Sequence[int] | None = None,
    ):
        self.dim = int(dim)
        if part_widths is None and self.dim == SDXL_WIDTH:
            part_widths = SDXL_WIDTHS  # a 2048-wide model is SDXL: CLIP-L 768 + bigG 1280
        self.part_widths = tuple(int(w) for w in part_widths) if part_widths is not None else None
        self.directory = Path(directory).expanduser() if directory is not None else None
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"embeddings directory {self.directory} is a file; pass a folder of embeddings")
        self._explicit: dict[str, _Source] = {}  # key: resolved path or "memory:<name>", in load order
        self._scanned: dict[str, _Source] = {}  # key: file name in the folder
        self._skipped: dict[str, str] = {}  # folder file name -> why it was skipped
        self._listing: tuple | None = None
        self._index: dict[str, tuple[str, LoadedEmbedding, str]] = {}  # lower name -> (name, term, label)
        self._star: tuple[str, LoadedEmbedding, str] | None = None
        self.version = 0  # bumped whenever the set of terms changes (prompt encoders cache on it)
        for path in paths:
            self.load(path)
        self.refresh()

    @classmethod
    def for_model(
        cls, model: Any, paths: Sequence[PathLike] = (), directory: PathLike | None = None
    ) -> EmbeddingLibrary:
        """A library for `model`'s text encoders (`model.text_encoders`, else its `cond_stage_model`): `dim`
        their widths summed, and for two encoders (SDXL) each one's width as `part_widths`."""
        encoders = getattr(model, "text_encoders", None)
        encoders = list(encoders) if encoders is not None else [model.cond_stage_model]
        widths = [int(e.token_embedding.weight.shape[1]) for e in encoders]
        return cls(sum(widths), paths, directory, part_widths=widths if len(widths) > 1 else None)

    # -- loading ------------------------------------------------------------------------------------
    def _read(self, path: Path) -> list[tuple[str, LoadedEmbedding]]:
        terms = read_embedding_file(path)
        check_width(terms, self.dim, str(path), self.part_widths)
        return [(prompt_name(t), t) for t in terms]

    def _claim(self, key: str, source: _Source) -> None:
        """Store an explicit source, refusing a name another explicit source already has."""
        for other_key, other in self._explicit.items():
            if other_key == key:
                continue
            taken = {n.lower() for n, _ in other.terms}
            clash = next((n for n, _ in source.terms if n.lower() in taken), None)
            if clash is not None:
                raise EmbeddingFileError(
                    f"{source.label}: embedding name {clash!r} is already used by "
                    f"{other.label}; load only one of them or rename one"
                )
        self._explicit[key] = source
        self._rebuild()

    def load(self, path: PathLike) -> list[str]:
        """Load an embedding file by path (any format); returns the names its terms answer to."""
        path = embedding_source(Path(path).expanduser())  # a pair's second file stands for its first
        terms = self._read(path)
        st = path.stat()
        resolved = path.resolve()
        self._claim(str(resolved), _Source(str(path), terms, (st.st_mtime_ns, st.st_size), resolved))
        names = [n for n, _ in terms]
        log.info("loaded embedding(s) %s from %s", ", ".join(names), path)
        return names

    def add(self, term: LoadedEmbedding, name: str | None = None) -> str:
        """Add an in-memory term (e.g. from EmbeddingManager.to_embeddings()); returns its prompt name."""
        check_width([term], self.dim, str(term.source) if term.source else "in-memory embedding", self.part_widths)
        check_finite(term.vectors, f"embedding {term.name!r}", term.token or term.name)
        name = name or prompt_name(term)
        self._claim(f"memory:{name.lower()}", _Source("memory", [(name, term)]))
        return name

    def load_by_name(self, name: str) -> list[str]:
        """Load `<directory>/<name>.<ext>` (or `<directory>/<name>` when it has a suffix already)."""
        if self.directory is None:
            raise ConfigError(
                f"cannot load embedding {name!r} by name: no embeddings directory is set; pass the file's path instead"
            )
        if (
            not name
            or name in (".", "..")
            or "/" in name
            or "\\" in name
            or "\x00" in name
            or Path(name).is_absolute()
            or PureWindowsPath(name).anchor
        ):
            raise EmbeddingFileError(
                f"embedding name {name!r} is not a plain file name inside {self.directory}; "
                "give just the name, e.g. 'mycat'"
            )
        tried = [name] if Path(name).suffix.lower() in SUFFIXES else []
        tried += [name + suffix for suffix in SUFFIXES]
        for candidate in tried:
            path = self.directory / candidate
            if path.is_file():
                return self.load(path)
        raise EmbeddingFileError(
            f"no embedding {name!r} in {self.directory} (tried {', '.join(tried)}); put the file there or pass its path"
        )

    # -- the folder -----------------------------------------------------------------------------------
    def _list_directory(self) -> tuple[tuple[str, int, int], ...]:
        if self.directory is None:
            return ()
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return ()
        listing = []
        for entry in entries:
            lower = entry.name.lower()
            if lower.startswith(".") or lower.endswith(".preview.png") or not lower.endswith(SUFFIXES):
                continue
            try:
                if entry.is_file():
                    st = entry.stat()
                    listing.append((entry.name, st.st_mtime_ns, st.st_size))
            except OSError:  # vanished between scandir and stat
                continue
        return _fold_pairs(listing)

    def refresh(self) -> bool:
        """Re-scan the folder if its listing changed; True when terms were (re)loaded or dropped."""
        listing = self._list_directory()
        if listing == self._listing:
            return False
        self._listing = listing
        kept: dict[str, _Source] = {}
        for filename, *stamp in listing:
            stamp = tuple(stamp)
            old = self._scanned.get(filename)
            if old is not None and old.stamp == stamp:
                kept[filename] = old
                continue
            path = self.directory / filename
            try:
                source = _Source(str(path), self._read(path), stamp, path.resolve())
                self._skipped.pop(filename, None)
            except (LdmUserError, OSError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                reason = reason.removeprefix(f"{path}: ")  # the warning names the file already
                log.warning("skipped embedding file %s: %s", path, reason)
                self._skipped[filename] = reason
                source = _Source(str(path), [], stamp)  # remembered so it is not re-read until it changes
            kept[filename] = source
        for gone in set(self._skipped) - set(kept):
            del self._skipped[gone]
        self._scanned = kept
        self._rebuild()
        return True

    # -- the name index -------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        index: dict[str, tuple[str, LoadedEmbedding, str]] = {}
        explicit_paths = {s.resolved for s in self._explicit.values() if s.resolved is not None}
        for source in self._explicit.values():
            for name, term in source.terms:
                index[name.lower()] = (name, term, source.label)
        for _filename, source in sorted(self._scanned.items()):
            if source.resolved in explicit_paths:
                continue  # the same file was loaded explicitly
            for name, term in source.terms:
                if name.lower() in index:
                    log.warning(
                        "skipped embedding %r in %s: the name is already used by %s; rename the file",
                        name,
                        source.label,
                        index[name.lower()][2],
                    )
                    continue
                index[name.lower()] = (name, term, source.label)
        stars = [(n, t, s.label) for s in self._explicit.values() for n, t in s.terms if t.token == STAR and n != STAR]
        if len(stars) > 1:
            log.warning(
                "'*' is ambiguous: %s all use it; write their names in prompts instead",
                ", ".join(f"{n!r} ({label})" for n, _, label in stars),
            )
        self._star = stars[0] if len(stars) == 1 else None
        self._index = index
        self.version += 1

    # -- queries --------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The terms' prompt names (explicit ones first, then the folder's in file order); `*` not included."""
        return [name for name, _, _ in self._index.values()]

    def terms(self) -> dict[str, LoadedEmbedding]:
        """Every word a prompt may use -> its term, the `*` alias included when it is active."""
        out = {name: term for name, term, _ in self._index.values()}
        if self._star is not None and STAR not in out:
            out[STAR] = self._star[1]
        return out

    def _lookup(self, name: str) -> tuple[str, LoadedEmbedding, str] | None:
        if name == STAR and self._star is not None:
            return self._star
        return self._index.get(name.lower())

    def get(self, name: str) -> LoadedEmbedding:
        found = self._lookup(name)
        if found is None:
            known = ", ".join(self.names()[:10]) or "none loaded"
            raise ConfigError(f"no embedding named {name!r} (known: {known}); load its file or check the name")
        return found[1]

    def canonical_name(self, word: str) -> str:
        """The prompt name of the term `word` refers to ("*" -> the term's own name)."""
        found = self._lookup(word)
        if found is None:
            raise ConfigError(f"no embedding named {word!r}; load its file or check the name")
        return found[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __len__(self) -> int:
        return len(self._index)

    @property
    def skipped(self) -> dict[str, str]:
        """Folder files that were not loaded -> the reason (each was also logged as a warning)."""
        return dict(self._skipped)

    def describe(self) -> list[str]:
        """One line per term: name, vector count, source (for the REPL's `!embeddings`)."""
        lines = []
        for name, term, label in self._index.values():
            alias = " (also '*')" if self._star is not None and self._star[1] is term else ""
            step = f", step {term.step}" if term.step is not None else ""
            lines.append(f"{name}{alias}: {term.num_vectors} vector(s){step}, from {label}")
        return lines
