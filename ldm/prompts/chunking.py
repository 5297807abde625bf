"""Split a prompt's weighted tokens into CLIP chunks of at most `chunk_length` positions.

Rules: an embedding's vectors are never split across chunks (if they do not fit in what is left, the
whole embedding starts the next chunk); BREAK ends the current chunk (a BREAK at the start, or two in
a row, makes no empty chunk); when a chunk overflows and one of its last `comma_backtrack` tokens is a
comma, the chunk ends after that comma and the rest moves on, so a phrase is not cut mid-way (A1111).
Each chunk becomes BOS + content + EOS + padding, `chunk_length + 2` positions; the padding id is the
tokenizer's (EOS for SD 1.x's CLIP, 0 for SD 2.x's OpenCLIP, as each model was trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ldm.errors import ConfigError
from ldm.prompts.term_matcher import TermRef


@dataclass(frozen=True)
class Piece:
    """The unit of chunking: one token, or one whole term (`ref`) whose vectors take `width` positions."""

    token: int
    weight: float = 1.0
    ref: TermRef | None = None

    @property
    def width(self) -> int:
        return self.ref.width if self.ref is not None else 1


@dataclass
class Chunk:
    pieces: list[Piece] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(p.width for p in self.pieces)

    def layout(
        self, bos: int, eos: int, chunk_length: int, pad: int | None = None
    ) -> tuple[list[int], list[float], list[tuple[int, TermRef, int]]]:
        """(ids [chunk_length + 2], weights, slots (position, term, vector index)). Term positions hold the
        EOS id as a stand-in; the caller overwrites them with the term's vectors. `pad` fills the
        positions after the EOS (None: EOS)."""
        ids, weights, slots = [bos], [1.0], []
        for p in self.pieces:
            if p.ref is None:
                ids.append(p.token)
                weights.append(p.weight)
            else:
                slots += [(len(ids) + v, p.ref, v) for v in range(p.width)]
                ids += [eos] * p.width
                weights += [p.weight] * p.width
        rest = chunk_length + 1 - len(ids)  # positions after the EOS
        ids += [eos] + [eos if pad is None else pad] * rest
        return ids, weights + [1.0] * (rest + 1), slots


BREAK_PIECE = Piece(token=-1, weight=0.0)  # marker in the piece stream; never placed in a chunk


def split_chunks(
    pieces: list[Piece], chunk_length: int = 75, comma: int | None = None, comma_backtrack: int = 20
) -> list[Chunk]:
    """The chunks of one prompt (at least one; an empty prompt gives one empty chunk)."""
    chunks: list[Chunk] = []
    current = Chunk()

    def close() -> None:
        nonlocal current
        if current.pieces:
            chunks.append(current)
        current = Chunk()

    for piece in pieces:
        if piece is BREAK_PIECE:
            close()
            continue
        if piece.width > chunk_length:
            raise ConfigError(
                f"embedding {piece.ref.name!r} has {piece.width} vectors but a prompt chunk holds "
                f"{chunk_length}; use an embedding with fewer vectors"
            )
        if current.length + piece.width > chunk_length:
            carried = _after_last_comma(current, comma, comma_backtrack)
            close_pieces = current.pieces[: len(current.pieces) - len(carried)]
            current = Chunk(close_pieces)
            close()
            current = Chunk(carried)
            if current.length + piece.width > chunk_length:  # a wide embedding after the carried phrase
                close()
        current.pieces.append(piece)
    close()
    return chunks or [Chunk()]


def _after_last_comma(chunk: Chunk, comma: int | None, backtrack: int) -> list[Piece]:
    """The pieces after the chunk's last comma when they are at most `backtrack` positions, else []."""
    if comma is None or backtrack <= 0:
        return []
    tail = 0
    for i in range(len(chunk.pieces) - 1, -1, -1):
        piece = chunk.pieces[i]
        if piece.ref is None and piece.token == comma:
            return chunk.pieces[i + 1 :]
        tail += piece.width
        if tail > backtrack:
            return []
    return []
