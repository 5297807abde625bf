"""Conditioner: the one path from prompts to what the UNet takes, for training and for sampling.

Steps for each prompt: parse emphasis and BREAK (or, with `prompt_syntax=False`, take the text literally, as
training captions are) -> tokenize (no BOS/EOS) -> replace every term's name by its vectors, longest name
first -> split into chunks of at most 75 positions (chunking.py) -> each text encoder runs on all chunks at
once, each with its own padding id, token embedding and columns of the terms' vectors, emphasis on its
output (encoding.py) -> the encoders' outputs are concatenated on the last axis (SDXL: 768 + 1280) and the
chunks along the sequence axis: context [B, 77 * k, D].

SDXL also gets "vector" [B, 2816]: the bigG encoder's pooled output at the EOS of each prompt's FIRST
chunk, with the Fourier embeddings of the size inputs (size_conditioning.py) appended by the model's
`conditioner.vector`. An empty prompt on SDXL gives zero context and a zero pooled part, as SDXL was
trained for the unconditional side (its size part is still filled).

Terms come from two places and are matched alike: the embedding library (loaded files and an embeddings
folder) and the model's embedding manager, whose placeholders are terms whose vectors are the trainable
parameters (`LearnedTerm`), so gradients reach exactly the words present in a batch. A learned word
shadows a library term of the same name. Short prompts without emphasis give exactly what the old
fixed-77 path gave. Prompts of one batch with fewer chunks are padded with empty-prompt chunks so they stack.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ldm.embeddings.library import EmbeddingLibrary
from ldm.errors import ConfigError
from ldm.prompts.chunking import BREAK_PIECE, Chunk, Piece, split_chunks
from ldm.prompts.context_cache import ContextCache
from ldm.prompts.encoding import encode_chunks
from ldm.prompts.parser import Fragment, parse_prompt
from ldm.prompts.size_conditioning import SizeInput, size_inputs
from ldm.prompts.term_matcher import Term, TermMatcher, TermRef, tokenize_texts

log = logging.getLogger(__name__)

CROSSATTN = "crossattn"  # the context key
VECTOR = "vector"  # SDXL's pooled text + size embedding, the UNet's `y`


class Conditioner:
    """`model` is anything with `.text_encoders` (a list in context order; `.cond_stage_model` alone does for
    one encoder), for SDXL `.conditioner.vector(...)`, and for textual inversion an `.embedding_manager`;
    all are looked up at each call (the model may be moved, cast, or given a manager later). The library
    is read live: `library.refresh()` picks up new files in its folder.

    `prompt_syntax=False` reads prompts literally: no emphasis, no BREAK, brackets are text.
    `negative_brackets=True` makes square brackets plain text, for prompts whose `[...]` were already
    taken out by `split_negative` (invoke REPL); by default `[word]` is A1111 de-emphasis.
    `comma_backtrack`: when a chunk overflows, end it after a comma among its last this-many tokens (0: off).
    """

    CACHE_SIZE = 32

    def __init__(
        self,
        model: Any,
        library: EmbeddingLibrary | None = None,
        chunk_length: int = 75,
        prompt_syntax: bool = True,
        negative_brackets: bool = False,
        comma_backtrack: int = 20,
    ):
        self.model = model
        self.library = library
        self.prompt_syntax = bool(prompt_syntax)
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
        self._matcher_source: tuple = ()  # (library version, manager) the matcher was built for
        self._comma: int | None = None
        self._cache = ContextCache(self.CACHE_SIZE)

    # -- the text encoders' parts and the terms (looked up each time) ----------------------------------
    @property
    def encoders(self) -> list[Any]:
        """The text encoders in context order: [cond_stage_model] for SD 1.x/2.x, [CLIP-L, bigG] for SDXL."""
        encoders = getattr(self.model, "text_encoders", None)
        return list(encoders) if encoders is not None else [self.model.cond_stage_model]

    @property
    def embedder(self) -> Any:
        """The first text encoder: its tokenizer chunks the prompts for all (they share CLIP's vocabulary)."""
        return self.encoders[0]

    @property
    def tokenizer(self) -> Any:
        return self.embedder.tokenizer

    @property
    def dim(self) -> int:
        """Width of a term's vectors and of the context: the encoders' widths summed (768, 1024, 2048)."""
        return sum(int(e.token_embedding.weight.shape[1]) for e in self.encoders)

    @property
    def general_conditioner(self) -> Any:
        """SDXL's text-and-size module (`model.conditioner`, with `vector`), or None for SD 1.x/2.x."""
        module = getattr(self.model, "conditioner", None)
        return module if hasattr(module, "vector") else None

    @property
    def manager(self) -> Any:
        return getattr(self.model, "embedding_manager", None)

    def _term_matcher(self) -> TermMatcher:
        version, manager = (self.library.version if self.library is not None else None), self.manager
        if self._matcher is None or self._matcher_source[0] != version or self._matcher_source[1] is not manager:
            terms: dict[str, Term] = dict(self.library.terms()) if self.library is not None else {}
            learned = manager.terms() if manager is not None else {}
            lowered = {n.lower(): n for n in terms}
            for name in learned:
                if name.lower() in lowered:
                    log.warning("the learned word %r shadows the loaded embedding of that name", name)
                    del terms[lowered[name.lower()]]
            terms.update(learned)
            self._matcher, self._matcher_source = TermMatcher(self.tokenizer, terms), (version, manager)
        return self._matcher

    def _comma_id(self) -> int | None:
        if self._comma is None:
            ids = tokenize_texts(self.tokenizer, [","])[0]
            self._comma = ids[0] if len(ids) == 1 else -1
        return self._comma if self._comma >= 0 else None

    # -- prompt -> chunks ---------------------------------------------------------------------------------
    def chunks(self, prompt: str) -> list[Chunk]:
        """The prompt's chunks (at least one)."""
        if self.prompt_syntax:
            fragments = parse_prompt(prompt, negative_brackets=self.negative_brackets)
        else:
            fragments = [Fragment(prompt)]
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

    # -- encoding -----------------------------------------------------------------------------------------
    def __call__(
        self,
        prompts: str | list[str],
        original_size: SizeInput = None,
        crop_top_left: SizeInput = None,
        target_size: SizeInput = None,
    ) -> dict[str, torch.Tensor]:
        """Prompts -> {"crossattn": context [B, 77 * k, D]}, k the largest chunk count in the batch; for SDXL
        also {"vector": y [B, 2816]}. The size inputs (SDXL only; ignored otherwise) are (height, width) /
        (top, left) pairs, one for all prompts or one per prompt; the target defaults to 1024x1024 (pass
        the size being generated), the original size to the target, the crop to (0, 0)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ConfigError("the conditioner got no prompts; pass a string or a list of strings")
        general = self.general_conditioner
        context, pooled = self._text(prompts, zero_empty=general is not None)
        if general is None:
            return {CROSSATTN: context}
        sizes = size_inputs(len(prompts), original_size, crop_top_left, target_size, device=context.device)
        return {CROSSATTN: context, VECTOR: general.vector(pooled, *sizes)}

    def _text(self, prompts: list[str], zero_empty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context, pooled or None), from the cache when nothing they depend on has changed. The vector is
        not cached: it is cheap, and computing it per call keeps the size inputs out of the key."""
        terms = self._term_matcher().terms
        key = (tuple(prompts), zero_empty, tuple((name, t.num_vectors) for name, t in terms.items()))
        tensors = [getattr(t, "parameter", t.vectors) for t in terms.values()]
        tensors += [p for e in self.encoders for p in e.parameters()]
        cached = self._cache.get(key, tensors)
        if cached is not None:
            return cached
        context, pooled = self._encode(prompts, zero_empty)
        if not context.requires_grad:  # a context in an autograd graph (training) is never reused
            self._cache.put(key, tensors, (context, pooled))
        return context, pooled

    def _encode(self, prompts: list[str], zero_empty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        per_prompt = [self.chunks(p) for p in prompts]
        k = max(len(c) for c in per_prompt)
        flat = [c for chunks in per_prompt for c in chunks + [Chunk()] * (k - len(chunks))]
        z, pooled = encode_chunks(self.encoders, flat, self.chunk_length)
        z = z.reshape(len(prompts), k * z.shape[1], z.shape[2])
        pooled = pooled[::k] if pooled is not None else None  # each prompt's first chunk
        empty = [not any(c.pieces for c in chunks) for chunks in per_prompt]
        if zero_empty and any(empty):  # SDXL's unconditional input: zeros, as it was trained (sgm's ucg)
            mask = torch.tensor(empty, device=z.device)
            z = z.masked_fill(mask[:, None, None], 0.0)
            pooled = pooled.masked_fill(mask[:, None], 0.0) if pooled is not None else None
        return z, pooled

    # -- reports ------------------------------------------------------------------------------------------
    def _name(self, ref: TermRef) -> str:
        lib = self.library
        if lib is not None and ref.name in lib and lib.get(ref.name) is ref.term:
            return lib.canonical_name(ref.name)
        return ref.name

    def used_embeddings(self, prompt: str) -> list[str]:
        """Names of the terms the prompt uses, in order of first use (for image metadata)."""
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
