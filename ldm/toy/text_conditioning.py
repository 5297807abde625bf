"""The text side of toy base-model training, for both model shapes: SD 1.x's one text encoder, and SDXL's
GeneralConditioner (two text encoders whose contexts concatenate, a pooled vector and size conditioning).

Captions are tokenized once per text encoder; each step encodes the batch's tokens differentiably, so the
text encoders learn with the UNet. A dropped caption (for classifier-free guidance) is trained as each
family samples it: SD 1.x encodes the empty caption "", SDXL zeroes the context and the pooled vector
(its size part stays), as SDXL was trained and as our prompt conditioner encodes an empty prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Cond = torch.Tensor | dict[str, torch.Tensor]


def is_sdxl(model: nn.Module) -> bool:
    return getattr(model, "conditioner", None) is not None


def text_module(model: nn.Module) -> nn.Module:
    """The module holding every text parameter (trained with the UNet)."""
    return model.conditioner if is_sdxl(model) else model.cond_stage_model


def text_encoders(model: nn.Module) -> list[nn.Module]:
    return list(model.conditioner.text_encoders) if is_sdxl(model) else [model.cond_stage_model]


def tokenize(model: nn.Module, captions: str | list[str]) -> list[torch.Tensor]:
    """Token ids [N, max_length] per text encoder (each pads with its own pad id)."""
    return [encoder.tokenize(captions) for encoder in text_encoders(model)]


def _sdxl_cond(model: nn.Module, tokens: list[torch.Tensor], drop: torch.Tensor, size: tuple[int, int]) -> Cond:
    from ldm.modules.encoders.open_clip import eos_index

    contexts, pooled = [], None
    for encoder, ids in zip(text_encoders(model), tokens):
        embeds = encoder.token_embedding(ids)
        if encoder.returns_pooled:
            context, pooled = encoder.encode_embeddings_pooled(embeds, eos_index(ids))
        else:
            context = encoder.encode_embeddings(embeds)
        contexts.append(context)
    keep = (~drop).to(contexts[0].dtype)
    context = torch.cat(contexts, dim=-1) * keep[:, None, None]
    if pooled is not None:
        pooled = pooled * keep[:, None]
    vector = model.conditioner.vector(pooled, size, (0, 0), size, batch=len(drop))
    return {"crossattn": context, "vector": vector}


def condition(
    model: nn.Module, tokens: list[torch.Tensor], empty: list[torch.Tensor], drop: torch.Tensor, size: Any
) -> Cond:
    """The UNet's conditioning for a batch of caption tokens (per encoder), `drop` [B] marking the captions
    trained as unconditional. `size` (height, width) is the original and target size of every image."""
    if not is_sdxl(model):
        ids = tokens[0].clone()
        ids[drop] = empty[0]
        return model.cond_stage_model.encode_tokens(ids)
    return _sdxl_cond(model, tokens, drop, size)
