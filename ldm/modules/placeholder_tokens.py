"""Placeholders as CLIP token sequences, and the token layout of prompts with learned slots in them.

The layout of one prompt: BOS, content, EOS, EOS-padding, `max_length` positions in all. Content is the
prompt's tokens (no special tokens), each placeholder occurrence replaced by as many slots as it has
active vectors, truncated to max_length - 2 without ever cutting an occurrence's slots in half.

Prompts are cut at literal placeholder occurrences before tokenizing, because CLIP's pre-tokenizer glues
runs of punctuation together: "a photo of *." would otherwise give the single token "*.", never "*".
An occurrence inside a longer word ("ajaj" in "ajajs") is not cut, so it stays a different word.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from ldm.errors import ConfigError

log = logging.getLogger(__name__)

Slot = tuple[int, int, int]  # (position in the row, placeholder index, vector index)


def _contains(haystack: Sequence[int], needle: Sequence[int]) -> bool:
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    # verbose=False: long prompts are truncated below, so the tokenizer's length warning is noise.
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


class PlaceholderTokens:
    """The placeholder strings, their token sequences (validated), and the prompt layout."""

    def __init__(self, tokenizer: Any, strings: Sequence[str]):
        self.strings = list(strings)
        self.sequences = _tokenize(tokenizer, self.strings)
        self._validate()
        self._first = {}
        for p, seq in enumerate(self.sequences):
            self._first.setdefault(seq[0], []).append(p)
        by_length = sorted(set(self.strings), key=len, reverse=True)  # longest first: "<cat2>" before "<cat"
        self._pattern = re.compile("|".join(re.escape(s) for s in by_length), re.IGNORECASE)
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def _validate(self) -> None:
        for s, seq in zip(self.strings, self.sequences):
            if not seq:
                raise ConfigError(f"placeholder {s!r} is empty (no CLIP tokens); use e.g. '*' or '<my-cat>'")
        for i, (a, sa) in enumerate(zip(self.strings, self.sequences)):
            for b, sb in zip(self.strings[i + 1 :], self.sequences[i + 1 :]):
                if sa == sb:
                    raise ConfigError(
                        f"placeholders {a!r} and {b!r} are the same CLIP tokens {sa}; "
                        "give each placeholder a distinct string"
                    )
                if _contains(sa, sb) or _contains(sb, sa):
                    outer, inner = (a, b) if _contains(sa, sb) else (b, a)
                    raise ConfigError(
                        f"placeholder {outer!r} contains placeholder {inner!r} as CLIP tokens; "
                        "choose placeholders that do not contain one another"
                    )

    def _segments(self, text: str) -> list[str]:
        """`text` cut at placeholder occurrences that are not part of a longer word."""
        cuts, start = [], 0
        for m in self._pattern.finditer(text):
            a, b = m.span()
            glued_left = a > 0 and text[a - 1].isalnum() and text[a].isalnum()
            glued_right = b < len(text) and text[b].isalnum() and text[b - 1].isalnum()
            if glued_left or glued_right:
                continue
            cuts += [text[start:a], text[a:b]]
            start = b
        return [c for c in cuts + [text[start:]] if c]

    def tokenize(self, tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
        pieces = [self._segments(t) for t in texts]
        flat = _tokenize(tokenizer, [s for segs in pieces for s in segs])
        out, k = [], 0
        for segs in pieces:
            out.append([i for ids in flat[k : k + len(segs)] for i in ids])
            k += len(segs)
        return out

    def _match(self, ids: list[int], at: int) -> int:
        for p in self._first.get(ids[at], ()):
            seq = self.sequences[p]
            if ids[at : at + len(seq)] == seq:
                return p
        return -1

    def layout(
        self, tokenizer: Any, texts: Sequence[str], active: Sequence[int], max_length: int
    ) -> tuple[list[list[int]], list[list[Slot]]]:
        """Token ids [B][max_length] (slots hold their placeholder's first token) and the slots per prompt."""
        if max_length < 3:
            raise ConfigError(f"max_length={max_length}; it must leave room for BOS, a token and EOS")
        budget = max_length - 2
        rows, slots = [], []
        for b, ids in enumerate(self.tokenize(tokenizer, texts)):
            content: list[int] = []
            row_slots: list[Slot] = []
            i = 0
            while i < len(ids):
                p = self._match(ids, i)
                width = active[p] if p >= 0 else 1
                if len(content) + width > budget:
                    if p >= 0:
                        log.warning(
                            "prompt %d: placeholder %r does not fit in the %d-token limit; dropped whole "
                            "(shorten the prompt)",
                            b,
                            self.strings[p],
                            budget,
                        )
                    else:
                        log.debug("prompt %d truncated to %d tokens", b, budget)
                    break
                if p < 0:
                    content.append(ids[i])
                    i += 1
                    continue
                row_slots += [(1 + len(content) + v, p, v) for v in range(width)]
                content += [self.sequences[p][0]] * width
                i += len(self.sequences[p])
            rows.append([self.bos] + content + [self.eos] + [self.pad] * (budget - len(content)))
            slots.append(row_slots)
        return rows, slots
