"""Prompt syntax: A1111 emphasis and BREAK, and the InvokeAI-2 `[negative words]` split.

Emphasis (AUTOMATIC1111's rules):
  `(words)` x1.1 per level, so `((words))` x1.21; `[words]` /1.1 per level; `(words:1.3)` sets 1.3 (it
  replaces the 1.1 of that level; outer levels still multiply). `\\(`, `\\)`, `\\[`, `\\]` and `\\\\` are
  literal characters. A closer with no opener is literal text; an opener never closed applies to the end.
  `BREAK` (uppercase, a whole word) ends the current 75-token chunk.
  Weights may use exponents (`(a:1e-1)`); a weight that is not finite (`nan`, `inf`, `1e999`) or beyond
  +-MAX_WEIGHT, or nesting so deep the product leaves that range, is a ConfigError naming the weight.

Square brackets have two meanings, and the caller picks one:
  * the invoke REPL runs `split_negative` first, so `[bad hands]` becomes the negative prompt; what is left
    is parsed with `negative_brackets=True`, where square brackets are plain text (none remain anyway);
  * everywhere else (`negative_brackets=False`, the default) `[words]` is A1111 de-emphasis.
Round-bracket emphasis works in both modes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ldm.errors import ConfigError
from ldm.validate import float_problem

ROUND = 1.1
SQUARE = 1 / 1.1
MAX_WEIGHT = 100.0  # |weight|: far beyond any useful emphasis (A1111 users stay within about 0..2)

# One lexical unit: an escape, an opener, a ":<number>)" weight closer (nan/inf too, so they can be refused
# rather than read as text), a closer, or a run of plain text.
_UNIT = re.compile(
    r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf(?:inity)?)))\s*\)"
    r"|\)|\]|\bBREAK\b|[^\\()\[\]:B]+|.",
    re.S,
)


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text with one emphasis weight; `is_break` marks a BREAK (its text is empty)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


BREAK = Fragment("", 1.0, is_break=True)


def parse_prompt(prompt: str, negative_brackets: bool = False) -> list[Fragment]:
    """Prompt -> weighted text fragments (adjacent equal weights merged) with BREAK markers in place."""
    pieces: list[list] = []  # [text, weight] pairs, or BREAK
    stack: list[tuple[str, int]] = []  # open brackets: (kind, index of the first piece inside)

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece is not BREAK:
                piece[1] *= factor

    for m in _UNIT.finditer(prompt):
        unit = m.group(0)
        if len(unit) == 2 and unit[0] == "\\":
            pieces.append([unit[1], 1.0])
        elif unit == "(" or (unit == "[" and not negative_brackets):
            stack.append((unit, len(pieces)))
        elif m.group(1) is not None and _innermost(stack, "("):
            scale(_pop(stack, "("), _weight(m.group(1), prompt, m.start()))
        elif unit == ")" and _innermost(stack, "("):
            scale(_pop(stack, "("), ROUND)
        elif unit == "]" and not negative_brackets and _innermost(stack, "["):
            scale(_pop(stack, "["), SQUARE)
        elif unit == "BREAK":
            pieces.append(BREAK)
        else:
            pieces.append([unit, 1.0])
    for kind, start in reversed(stack):  # unclosed: applies to the end, as in A1111
        scale(start, ROUND if kind == "(" else SQUARE)
    _check_products(pieces, prompt)
    return _merge(pieces)


def _where(prompt: str, end: int) -> str:
    """The prompt up to `end`, cut to its last 40 characters, for an error message."""
    return repr(prompt[:end] if end <= 40 else "..." + prompt[end - 40 : end])


def _weight(text: str, prompt: str, colon: int) -> float:
    """The number of a `(words:<text>)` closer whose colon is at `colon`; refused with the bracket quoted."""
    problem = float_problem(text, -MAX_WEIGHT, MAX_WEIGHT)
    if problem:
        shown = text if len(text) <= 24 else text[:20] + "..."
        opener = prompt.rfind("(", 0, colon)
        words = prompt[opener:colon] if colon - opener <= 30 else prompt[opener : opener + 26] + "..."
        raise ConfigError(f"prompt emphasis '{words}:{shown})': the weight is {problem}")
    return float(text)


def _check_products(pieces: list, prompt: str) -> None:
    """Nested brackets multiply; refuse a product that overflows or leaves +-MAX_WEIGHT."""
    for piece in pieces:
        if piece is not BREAK and not abs(piece[1]) <= MAX_WEIGHT:  # also catches NaN (inf x 0)
            raise ConfigError(
                f"prompt {_where(prompt, len(prompt))}: emphasis on {piece[0].strip()[:30]!r} multiplies to "
                f"{piece[1]:g}, beyond +-{MAX_WEIGHT:g}; use fewer nested brackets or a smaller (word:weight)"
            )


def _innermost(stack: list[tuple[str, int]], kind: str) -> bool:
    return any(k == kind for k, _ in stack)


def _pop(stack: list[tuple[str, int]], kind: str) -> int:
    """Close the innermost bracket of `kind` (A1111 keeps round and square levels independently)."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] == kind:
            return stack.pop(i)[1]
    raise AssertionError("caller checked _innermost")


def _merge(pieces: list) -> list[Fragment]:
    out: list[Fragment] = []
    for piece in pieces:
        if piece is BREAK:
            # BREAK eats the spaces around it, so "a BREAK b" gives "a" and "b".
            if out and not out[-1].is_break:
                out[-1] = Fragment(out[-1].text.rstrip(), out[-1].weight)
            out.append(BREAK)
            continue
        text, weight = piece
        if out and out[-1].is_break:
            text = text.lstrip()
        if not text:
            continue
        if out and not out[-1].is_break and out[-1].weight == weight:
            out[-1] = Fragment(out[-1].text + text, weight)
        else:
            out.append(Fragment(text, weight))
    return [f for f in out if f.is_break or f.text]


def split_negative(prompt: str) -> tuple[str, str]:
    """InvokeAI-2 syntax: `[bracketed words]` are the negative prompt. Returns (positive, negative).

    Outermost groups are taken whole (inner brackets dropped) and joined with ", "; escaped `\\[` `\\]`
    stay in the positive prompt; an unclosed `[` is plain text. Whitespace left by a removed group is
    collapsed. Round-bracket emphasis stays in both halves.
    """
    positive: list[str] = []
    negatives: list[str] = []
    i, n = 0, len(prompt)
    while i < n:
        ch = prompt[i]
        if ch == "\\" and i + 1 < n:
            positive.append(prompt[i : i + 2])
            i += 2
            continue
        if ch == "[":
            end = _matching_bracket(prompt, i)
            if end >= 0:
                inner = prompt[i + 1 : end]
                inner = re.sub(r"(?<!\\)[\[\]]", "", inner).strip()
                if inner:
                    negatives.append(inner)
                positive.append(" ")
                i = end + 1
                continue
        positive.append(ch)
        i += 1
    text = re.sub(r"[ \t]+", " ", "".join(positive)).strip()
    text = re.sub(r" +([,.;])", r"\1", text)  # "a cat [dog], x" -> "a cat, x", not "a cat , x"
    return text, ", ".join(negatives)


def _matching_bracket(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
