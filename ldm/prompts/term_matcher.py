"""Find embedding-library terms in prompt text, as CLIP token sequences.

The text is first cut at literal occurrences of term names, because CLIP's pre-tokenizer glues runs of
punctuation: "a photo of *." would give the single token "*." and never "*". An occurrence glued to a
letter or digit ("mycats" for the term "mycat") is not cut, so it stays an ordinary word. The token ids
are then scanned for each term's token sequence, longest first, so "<cat-toy>" wins over a term "cat".
Matching is case-insensitive, as CLIP lowercases everything. A term is anything with `vectors` [n, dim]
and `num_vectors`: a loaded file's `LoadedEmbedding`, or a word being trained (`LearnedTerm`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Term(Protocol):
    """What a prompt word stands for: its vectors, one per position it takes."""

    @property
    def vectors(self) -> torch.Tensor: ...

    @property
    def num_vectors(self) -> int: ...


@dataclass(frozen=True)
class TermRef:
    """An occurrence of a library term: its vectors take `width` positions."""

    name: str
    term: Term

    @property
    def width(self) -> int:
        return self.term.num_vectors


Item = int | TermRef  # a token id or a whole term


def tokenize_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without BOS/EOS and without truncation (chunking happens later)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


class TermMatcher:
    """`tokenize(text)` -> token ids with every term occurrence replaced by a `TermRef`."""

    def __init__(self, tokenizer: Any, terms: Mapping[str, Term]):
        self.tokenizer = tokenizer
        self.terms = dict(terms)
        names = [n for n in terms if n.strip()]
        sequences = tokenize_texts(tokenizer, names)
        self._by_first: dict[int, list[tuple[list[int], TermRef]]] = {}
        for name, seq in zip(names, sequences):
            if seq:
                self._by_first.setdefault(seq[0], []).append((seq, TermRef(name, terms[name])))
        for options in self._by_first.values():
            options.sort(key=lambda o: len(o[0]), reverse=True)  # longest sequence first
        by_length = sorted(names, key=len, reverse=True)
        self._pattern: re.Pattern | None = (
            re.compile("|".join(re.escape(n) for n in by_length), re.IGNORECASE) if by_length else None
        )

    def _segments(self, text: str) -> list[str]:
        if self._pattern is None:
            return [text]
        cuts, start = [], 0
        for m in self._pattern.finditer(text):
            a, b = m.span()
            glued_left = a > 0 and text[a - 1].isalnum() and text[a].isalnum()
            glued_right = b < len(text) and text[b].isalnum() and text[b - 1].isalnum()
            if not (glued_left or glued_right):
                cuts += [text[start:a], text[a:b]]
                start = b
        return [c for c in cuts + [text[start:]] if c]

    def tokenize_many(self, texts: list[str]) -> list[list[Item]]:
        """Each text -> its items; all segments go through the tokenizer in one call."""
        pieces = [self._segments(t) for t in texts]
        flat = tokenize_texts(self.tokenizer, [s for segs in pieces for s in segs])
        out, k = [], 0
        for segs in pieces:
            ids = [i for seg_ids in flat[k : k + len(segs)] for i in seg_ids]
            k += len(segs)
            out.append(self._match(ids))
        return out

    def tokenize(self, text: str) -> list[Item]:
        return self.tokenize_many([text])[0]

    def _match(self, ids: list[int]) -> list[Item]:
        items: list[Item] = []
        i = 0
        while i < len(ids):
            for seq, ref in self._by_first.get(ids[i], ()):
                if ids[i : i + len(seq)] == seq:
                    items.append(ref)
                    i += len(seq)
                    break
            else:
                items.append(ids[i])
                i += 1
        return items
