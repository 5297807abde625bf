"""Chunks -> context through every text encoder of the model (one for SD 1.x/2.x, CLIP-L + bigG for SDXL).

The chunks (token ids and term positions) are the same for every encoder, as they share CLIP's vocabulary;
each encoder lays them out with its own padding id (EOS for CLIP, 0 for OpenCLIP), looks the ids up in its
own token embedding, takes its own columns of the terms' vectors (`vectors[:, enc.columns]`: an SDXL term
is one [n, 2048] tensor, CLIP-L's 768 columns then bigG's 1280), runs, and gets emphasis on its own output
(A1111 weights each SDXL encoder separately). The outputs are concatenated on the last axis in encoder
order. An encoder with `returns_pooled` (SDXL's bigG) also gives the pooled vector of each chunk, taken at
the chunk's EOS position: a placeholder id appended to the vocabulary would win an argmax over ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ldm.prompts.chunking import Chunk
from ldm.prompts.emphasis import apply_emphasis


def _spliced_embeds(encoder: Any, layouts: list, values: torch.Tensor | None) -> torch.Tensor:
    """The encoder's token embeddings of the laid-out ids with the terms' vectors (its columns) in place."""
    emb = encoder.token_embedding
    ids = torch.tensor([ids for ids, _, _ in layouts], dtype=torch.long, device=emb.weight.device)
    embeds = emb(ids)
    if values is None:
        return embeds
    slots = [(row, pos) for row, (_, _, row_slots) in enumerate(layouts) for pos, _, _ in row_slots]
    rows = torch.tensor([r for r, _ in slots], device=embeds.device)
    cols = torch.tensor([p for _, p in slots], device=embeds.device)
    values = values[:, getattr(encoder, "columns", slice(None))]
    return embeds.index_put((rows, cols), values.to(device=embeds.device, dtype=embeds.dtype))


def _term_values(layouts: list) -> torch.Tensor | None:
    """The vectors of every term position, in layout order ([positions, full width]), or None."""
    refs = [(ref, v) for _, _, row_slots in layouts for _, ref, v in row_slots]
    if not refs:
        return None
    # Only the terms in these prompts join the graph: a learned word absent from the batch keeps grad None,
    # so the optimizer leaves it alone (no weight decay or moment updates).
    return torch.stack([ref.term.vectors[v] for ref, v in refs])


def encode_chunks(
    encoders: Sequence[Any], chunks: list[Chunk], chunk_length: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunks -> (context [chunks, chunk_length + 2, sum of widths], pooled [chunks, P] or None)."""
    contexts, pooled, values = [], None, None
    for i, encoder in enumerate(encoders):
        tok = encoder.tokenizer
        layouts = [c.layout(tok.bos_token_id, tok.eos_token_id, chunk_length, tok.pad_token_id) for c in chunks]
        if i == 0:
            values = _term_values(layouts)  # the slots are the same for every encoder
        embeds = _spliced_embeds(encoder, layouts, values)
        if getattr(encoder, "returns_pooled", False):
            eos = torch.tensor([1 + c.length for c in chunks], dtype=torch.long, device=embeds.device)
            z, pooled = encoder.encode_embeddings_pooled(embeds, eos)
        else:
            z = encoder.encode_embeddings(embeds)
        contexts.append(apply_emphasis(z, [w for _, w, _ in layouts]))
    context = contexts[0] if len(contexts) == 1 else torch.cat(contexts, dim=-1)
    return context, pooled
