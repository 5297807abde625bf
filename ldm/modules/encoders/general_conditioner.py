"""GeneralConditioner: SDXL's text encoders and size embedders as one module (`conditioner.embedders.*`).

Built from sgm's `conditioner_config.params.emb_models`: a list of `{target, params, input_key,
is_trainable, ucg_rate}` entries, in sgm's order for SDXL base: 0 CLIP-L (`txt`), 1 OpenCLIP bigG
(`txt`, pooled), 2 `original_size_as_tuple`, 3 `crop_coords_top_left`, 4 `target_size_as_tuple`
(ConcatTimestepEmbedderND). The text encoders' contexts are concatenated along the width in this order
(768 + 1280 = 2048): each text encoder gets `columns` (its slice of the context and of an SDXL learned
vector) and `embedding_key` ("clip_l"/"clip_g", its key in SDXL embedding files). The UNet's vector
`y` concatenates, in embedder order, the pooled text output and each size embedding (1280 + 3*512 = 2816).

Textual inversion trains no network here: `is_trainable` and `ucg_rate` are accepted for sgm configs and
otherwise unused (everything is frozen). The prompt path (learned words, long prompts, emphasis) lives in
ldm.prompts, which calls the text encoders' `encode_embeddings` and then `vector`; `forward` is the
plain sgm-style path for a batch of captions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ldm.errors import ConfigError
from ldm.modules.encoders.modules import FrozenCLIPEmbedder
from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder, eos_index
from ldm.util import instantiate_from_config

log = logging.getLogger(__name__)

TEXT_KEY = "txt"
# sgm's batch keys for the size embedders -> the names `vector` takes them by ((height, width) / (top, left)).
SIZE_KEYS = {
    "original_size_as_tuple": "original_size",
    "crop_coords_top_left": "crop_top_left",
    "target_size_as_tuple": "target_size",
}
ENTRY_KEYS = {"target", "params", "input_key", "input_keys", "is_trainable", "ucg_rate", "legacy_ucg_value"}
# SDXL embedding-file keys and diffusers tokenizer folders, by encoder class (not width: tiny test
# encoders get them too).
CLIP_L, CLIP_G = "clip_l", "clip_g"
TOKENIZER_SUBFOLDER = {CLIP_L: "tokenizer", CLIP_G: "tokenizer_2"}

SizeLike = torch.Tensor | Sequence[int] | Sequence[float]


def _embedding_key(embedder: nn.Module) -> str | None:
    if isinstance(embedder, FrozenOpenCLIPEmbedder):
        return CLIP_G
    if isinstance(embedder, FrozenCLIPEmbedder):
        return CLIP_L
    return None


def _input_key(entry: Mapping[str, Any], index: int) -> str:
    key = entry.get("input_key")
    keys = entry.get("input_keys")
    if key is None and keys is not None and len(keys) == 1:
        key = keys[0]
    if key != TEXT_KEY and key not in SIZE_KEYS:
        allowed = ", ".join([TEXT_KEY, *SIZE_KEYS])
        raise ConfigError(
            f"conditioner_config emb_models[{index}] input_key={key!r} is not supported; use one of: {allowed}"
        )
    return key


def _as_pairs(value: SizeLike, batch: int, device: torch.device) -> torch.Tensor:
    """A [B, 2] tensor, or one (a, b) pair for every row -> float32 [batch, 2] on `device`."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.dim() == 1:
        t = t[None].expand(batch, -1)
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] != batch:
        raise ValueError(f"a size must be a (height, width)-style pair or a [{batch}, 2] tensor, got {tuple(t.shape)}")
    return t


class GeneralConditioner(nn.Module):
    """SDXL's conditioner: `embedders` (nn.ModuleList, the checkpoint's `conditioner.embedders.N`)."""

    def __init__(self, emb_models: Sequence[Mapping[str, Any]], model_path: str | None = None, **ignored: Any):
        super().__init__()
        if ignored:
            log.warning("GeneralConditioner ignores conditioner_config params %s", sorted(ignored))
        if not emb_models:
            raise ConfigError("conditioner_config params.emb_models is empty; list the text and size embedders")
        embedders = []
        for index, entry in enumerate(emb_models):
            embedders.append(self._build(entry, index, model_path))
        self.embedders = nn.ModuleList(embedders)
        self._assign_columns()
        self.freeze()

    @staticmethod
    def _build(entry: Mapping[str, Any], index: int, model_path: str | None) -> nn.Module:
        if not isinstance(entry, Mapping) and not hasattr(entry, "get"):
            raise ConfigError(f"conditioner_config emb_models[{index}] is not a config node with 'target'")
        unknown = sorted(set(entry.keys()) - ENTRY_KEYS)
        if unknown:
            raise ConfigError(
                f"conditioner_config emb_models[{index}] has unknown keys {unknown}; "
                f"allowed: {', '.join(sorted(ENTRY_KEYS))}"
            )
        key = _input_key(entry, index)
        embedder = instantiate_from_config(entry)
        embedder.input_key = key
        embedder.is_trainable = bool(entry.get("is_trainable", False))
        embedder.ucg_rate = float(entry.get("ucg_rate", 0.0) or 0.0)
        is_text = hasattr(embedder, "encode_embeddings")
        if is_text != (key == TEXT_KEY):
            raise ConfigError(
                f"conditioner_config emb_models[{index}] ({entry['target']}) has input_key {key!r}; "
                f"text encoders take {TEXT_KEY!r} and size embedders one of {', '.join(SIZE_KEYS)}"
            )
        if embedder.is_trainable:
            log.info("emb_models[%d] is_trainable is ignored: textual inversion trains only the embedding", index)
        if is_text and model_path and getattr(embedder, "_tokenizer_args", (None, None))[1] is None:
            embedder._tokenizer_args = (embedder._tokenizer_args[0], model_path)  # search beside the model
        return embedder

    def _assign_columns(self) -> None:
        start, seen = 0, set()
        for embedder in self.text_encoders:
            embedder.columns = slice(start, start + embedder.width)
            start += embedder.width
            key = _embedding_key(embedder)
            if key in seen:
                raise ConfigError(f"conditioner_config has two {key} text encoders; SDXL has one CLIP-L and one bigG")
            seen.add(key)
            embedder.embedding_key = key
            if key:
                embedder.tokenizer_subfolder = TOKENIZER_SUBFOLDER[key]
        if not self.text_encoders:
            raise ConfigError("conditioner_config emb_models has no text encoder (input_key: txt)")
        if sum(bool(e.returns_pooled) for e in self.text_encoders) > 1:
            raise ConfigError("conditioner_config has two text encoders returning a pooled output; SDXL has one")

    # -- what callers use ------------------------------------------------------------------------------
    @property
    def text_encoders(self) -> list[nn.Module]:
        """The text embedders in context order (SDXL: CLIP-L, bigG)."""
        return [e for e in self.embedders if e.input_key == TEXT_KEY]

    @property
    def size_embedders(self) -> list[nn.Module]:
        return [e for e in self.embedders if e.input_key != TEXT_KEY]

    @property
    def width(self) -> int:
        """Context width: the sum of the text encoders' widths (SDXL: 768 + 1280 = 2048)."""
        return sum(int(e.width) for e in self.text_encoders)

    @property
    def pooled_encoder(self) -> nn.Module | None:
        """The text encoder whose pooled output enters the vector (SDXL: bigG), or None."""
        return next((e for e in self.text_encoders if e.returns_pooled), None)

    @property
    def vector_width(self) -> int:
        """Width of `vector`'s output (SDXL: 1280 + 3 * 2 * 256 = 2816, the UNet's adm_in_channels)."""
        pooled = self.pooled_encoder
        width = int(pooled.model.text_projection.shape[1]) if pooled is not None else 0
        return width + sum(2 * e.outdim for e in self.size_embedders)

    def vector(
        self,
        pooled: torch.Tensor | None,
        original_size: SizeLike,
        crop_top_left: SizeLike,
        target_size: SizeLike,
        batch: int | None = None,
    ) -> torch.Tensor:
        """The UNet's `y` [B, vector_width]: pooled [B, P] and the size embeddings, in embedder order.
        Sizes are [B, 2] tensors or one pair for all rows: (height, width), (top, left), (height, width)."""
        if (pooled is None) != (self.pooled_encoder is None):
            raise ValueError("pass the pooled text output exactly when the conditioner has a pooled encoder")
        if pooled is not None:
            batch, device, dtype = pooled.shape[0], pooled.device, pooled.dtype
        else:
            batch, device, dtype = batch or 1, self._device(), torch.float32
        sizes = {"original_size": original_size, "crop_top_left": crop_top_left, "target_size": target_size}
        parts = []
        for embedder in self.embedders:
            if embedder.input_key == TEXT_KEY:
                if embedder.returns_pooled:
                    parts.append(pooled)
                continue
            parts.append(embedder(_as_pairs(sizes[SIZE_KEYS[embedder.input_key]], batch, device)).to(dtype))
        return torch.cat(parts, dim=1)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """sgm's plain path: {"txt": captions, size keys: [B, 2]} -> {"crossattn": [B, 77, width],
        "vector": [B, vector_width]}. No learned words, no chunking: the prompt Conditioner does those."""
        texts = batch[TEXT_KEY]
        texts = [texts] if isinstance(texts, str) else list(texts)
        contexts, pooled = [], None
        for encoder in self.text_encoders:
            tokens = encoder.tokenize(texts).to(self._device())
            embeds = encoder.token_embedding(tokens)
            if encoder.returns_pooled:
                context, pooled = encoder.encode_embeddings_pooled(embeds, eos_index(tokens))
            else:
                context = encoder.encode_embeddings(embeds)
            contexts.append(context)
        sizes = {name: batch[key] for key, name in SIZE_KEYS.items() if key in batch}
        missing = [key for key, name in SIZE_KEYS.items() if name not in sizes and self._uses(key)]
        if missing:
            raise KeyError(f"the batch lacks {', '.join(missing)}")
        defaults = dict.fromkeys(SIZE_KEYS.values(), (0, 0))
        vector = self.vector(pooled, **{**defaults, **sizes}, batch=len(texts))
        return {"crossattn": torch.cat(contexts, dim=-1), "vector": vector}

    def _uses(self, key: str) -> bool:
        return any(e.input_key == key for e in self.size_embedders)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def freeze(self) -> None:
        self.eval()
        for p in self.parameters():
            p.requires_grad = False
        for embedder in self.text_encoders:
            embedder.freeze()

    def reset_buffers(self) -> None:
        """After a build on the meta device: each text encoder recreates what no file carries."""
        for embedder in self.text_encoders:
            embedder.reset_buffers()
