"""PromptEncoder: prompts with emphasis, BREAK and library embeddings -> CLIP context of any length.

Steps for each prompt: parse emphasis -> tokenize each fragment (no BOS/EOS) -> replace every library
term's name by its vectors -> split into chunks of at most 75 positions (see chunking.py) -> each chunk
becomes BOS + chunk + EOS padding (77) -> the CLIP transformer runs on the token embeddings of all chunks
at once -> chunks are concatenated along the sequence axis: [B, 77 * k, D].

Emphasis (A1111): each position's output is multiplied by its weight, then the chunk is rescaled so its
mean equals the unweighted mean. Chunks without emphasis are left untouched, so a short plain prompt gives
exactly `cond_stage_model.encode(prompt)`. Prompts of one batch with fewer chunks are padded with
empty-prompt chunks (BOS + EOS...) so they stack.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch

from ldm.embeddings.library import EmbeddingLibrary
from ldm.errors import ConfigError
from ldm.prompts.chunking import BREAK_PIECE, Chunk, Piece, split_chunks
from ldm.prompts.parser import parse_prompt
from ldm.prompts.term_matcher import TermMatcher, TermRef, tokenize_texts

log = logging.getLogger(__name__)


class PromptEncoder:
    """`model` is anything with `.cond_stage_model` (a FrozenCLIPEmbedder). The library is read live:
    call `library.refresh()` to pick up new files in its folder; the term matcher follows its `version`.

    `negative_brackets=True` makes square brackets plain text, for prompts whose `[...]` were already
    taken out by `split_negative` (invoke REPL); by default `[word]` is A1111 de-emphasis.
    `comma_backtrack`: when a chunk overflows, end it after a comma among its last this-many tokens (0: off).
    """

    def __init__(
        self,
        model: Any,
        library: EmbeddingLibrary | None = None,
        chunk_length: int = 75,
        negative_brackets: bool = False,
        comma_backtrack: int = 20,
    ):
        self.model = model
        self.library = library
        self.negative_brackets = bool(negative_brackets)
        self.comma_backtrack = int(comma_backtrack)
        limit = self.embedder.max_length - 2
        if not 1 <= chunk_length <= limit:
            raise ConfigError(
                f"chunk_length={chunk_length}; use 1..{limit} (the text encoder takes "
                f"{self.embedder.max_length} positions including BOS and EOS)"
            )
        self.chunk_length = int(chunk_length)
        if library is not None and library.dim != self.dim:
            raise ConfigError(
                f"the embedding library is {library.dim} wide but this model's text encoder takes "
                f"{self.dim}; build EmbeddingLibrary(dim={self.dim}, ...)"
            )
        self._matcher: TermMatcher | None = None
        self._matcher_version: int | None = None
        self._comma: int | None = None
        # Sampling re-encodes the same prompt and negative prompt for every command and batch; the text
        # transformer's output only changes with the prompts, the library's terms and the weights' device/dtype.
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    # -- the text encoder's parts (looked up each time: the model may be moved or cast) ------------------
    @property
    def embedder(self) -> Any:
        return self.model.cond_stage_model

    @property
    def tokenizer(self) -> Any:
        return self.embedder.tokenizer

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self.embedder.text_model.embeddings.token_embedding

    @property
    def dim(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    def _term_matcher(self) -> TermMatcher:
        version = self.library.version if self.library is not None else None
        if self._matcher is None or version != self._matcher_version:
            terms = self.library.terms() if self.library is not None else {}
            self._matcher, self._matcher_version = TermMatcher(self.tokenizer, terms), version
        return self._matcher

    def _comma_id(self) -> int | None:
        if self._comma is None:
            ids = tokenize_texts(self.tokenizer, [","])[0]
            self._comma = ids[0] if len(ids) == 1 else -1
        return self._comma if self._comma >= 0 else None

    # -- prompt -> chunks ---------------------------------------------------------------------------------
    def chunks(self, prompt: str) -> list[Chunk]:
        """The prompt's chunks (at least one)."""
        fragments = parse_prompt(prompt, negative_brackets=self.negative_brackets)
        texts = [f.text for f in fragments if not f.is_break]
        items = iter(self._term_matcher().tokenize_many(texts))
        pieces: list[Piece] = []
        for fragment in fragments:
            if fragment.is_break:
                pieces.append(BREAK_PIECE)
                continue
            for item in next(items):
                if isinstance(item, TermRef):
                    pieces.append(Piece(token=-1, weight=fragment.weight, ref=item))
                else:
                    pieces.append(Piece(token=item, weight=fragment.weight))
        return split_chunks(pieces, self.chunk_length, self._comma_id(), self.comma_backtrack)

    def _layouts(self, chunks: list[Chunk]):
        tok = self.tokenizer
        return [c.layout(tok.bos_token_id, tok.eos_token_id, self.chunk_length) for c in chunks]

    # -- encoding -----------------------------------------------------------------------------------------
    CACHE_SIZE = 32

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> context [B, 77 * k, D], k the largest chunk count in the batch (cached per prompt list)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ConfigError("PromptEncoder.encode got no prompts; pass a string or a list of strings")
        weight = self.token_embedding.weight
        # In-place edits of a term's vectors bump their tensor version, so they miss the cache too.
        terms = (
            tuple((id(t.vectors), t.vectors._version) for t in self.library.terms().values()) if self.library else ()
        )
        key = (
            tuple(prompts),
            self.library.version if self.library is not None else None,
            terms,
            id(self.embedder),
            weight.device,
            weight.dtype,
            weight._version,
        )
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        z = self._encode(prompts)
        if not torch.is_grad_enabled() or not z.requires_grad:
            self._cache[key] = z
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return z

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        per_prompt = [self.chunks(p) for p in prompts]
        k = max(len(c) for c in per_prompt)
        flat = [c for chunks in per_prompt for c in chunks + [Chunk()] * (k - len(chunks))]
        layouts = self._layouts(flat)
        emb = self.token_embedding
        ids = torch.tensor([ids for ids, _, _ in layouts], dtype=torch.long, device=emb.weight.device)
        embeds = emb(ids)
        slots = [
            (row, pos, ref.term.vectors[v])
            for row, (_, _, row_slots) in enumerate(layouts)
            for pos, ref, v in row_slots
        ]
        if slots:
            rows = torch.tensor([r for r, _, _ in slots], device=embeds.device)
            cols = torch.tensor([p for _, p, _ in slots], device=embeds.device)
            values = torch.stack([v for _, _, v in slots]).to(device=embeds.device, dtype=embeds.dtype)
            embeds = embeds.index_put((rows, cols), values)
        z = self.embedder.encode_embeddings(embeds)
        z = self._apply_emphasis(z, [w for _, w, _ in layouts])
        return z.reshape(len(prompts), k * z.shape[1], z.shape[2])

    @staticmethod
    def _apply_emphasis(z: torch.Tensor, weights: list[list[float]]) -> torch.Tensor:
        """Scale each position by its weight, then restore each emphasised chunk's mean (A1111)."""
        weighted = [i for i, w in enumerate(weights) if any(x != 1.0 for x in w)]
        if not weighted:
            return z
        z = z.clone()
        for i in weighted:
            chunk = z[i].float()
            w = torch.tensor(weights[i], dtype=torch.float32, device=z.device)[:, None]
            scaled = chunk * w
            new_mean = scaled.mean()
            if new_mean.abs() > 1e-12:  # a zero mean cannot be restored by scaling; keep the weighted values
                scaled = scaled * (chunk.mean() / new_mean)
            z[i] = scaled.to(z.dtype)
        return z

    # -- reports ------------------------------------------------------------------------------------------
    def _name(self, ref: TermRef) -> str:
        return self.library.canonical_name(ref.name) if self.library is not None else ref.name

    def used_embeddings(self, prompt: str) -> list[str]:
        """Names of the library terms the prompt uses, in order of first use (for image metadata)."""
        names: list[str] = []
        for chunk in self.chunks(prompt):
            for piece in chunk.pieces:
                if piece.ref is not None and self._name(piece.ref) not in names:
                    names.append(self._name(piece.ref))
        return names

    def tokenization_report(self, prompt: str) -> list[str]:
        """One line per chunk: its tokens, `<name:i>` where a term's vector i lands, `[xW]` after weighted
        tokens; then a summary line. Nothing is ever truncated: long prompts get more chunks."""
        lines, positions = [], 0
        chunks = self.chunks(prompt)
        for c, chunk in enumerate(chunks):
            words: list[str] = []
            for piece in chunk.pieces:
                if piece.ref is not None:
                    name = self._name(piece.ref)
                    name = name[1:-1] if name.startswith("<") and name.endswith(">") else name
                    word = " ".join(f"<{name}:{v}>" for v in range(piece.width))
                else:
                    word = self.tokenizer.convert_ids_to_tokens(piece.token).replace("</w>", "")
                words.append(word + (f"[x{piece.weight:.3g}]" if piece.weight != 1.0 else ""))
            positions += chunk.length
            lines.append(f"chunk {c} ({chunk.length}/{self.chunk_length}): {' '.join(words)}")
        lines.append(f"{positions} positions in {len(chunks)} chunk(s) of {self.chunk_length}; nothing truncated")
        return lines
