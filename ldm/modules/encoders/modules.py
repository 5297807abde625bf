"""FrozenCLIPEmbedder: the SD v1 text encoder (CLIP ViT-L/14 text transformer), built from a config; also
SDXL's first text encoder (`layer: hidden`, `layer_idx: 11`, under `conditioner.embedders.0.`).

The weights come from the SD checkpoint itself (`cond_stage_model.transformer.text_model.*`), so building
never downloads anything. The transformer is transformers' own `CLIPTextModel`, held under a
`text_model` attribute to keep the CompVis key layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldm.errors import ConfigError
from ldm.modules.encoders.open_clip import FrozenOpenCLIPEmbedder
from ldm.modules.encoders.tokenizer import load_tokenizer

# Stability's SD 2.x configs name `ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder`: re-exported so
# users' own v2 yamls instantiate unchanged.

__all__ = ["FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder"]

# The ViT-L/14 text tower used by Stable Diffusion v1.x.
VIT_L14_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def _check_layer_idx(layer: str, layer_idx: int | None, n_layers: int) -> int | None:
    """`layer_idx` is required by, and only meaningful for, layer "hidden" (0 = embeddings only)."""
    if layer != "hidden":
        if layer_idx is not None:
            raise ConfigError(f"layer_idx={layer_idx} needs layer: hidden (got layer={layer!r}); remove one of them")
        return None
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx <= n_layers:
        raise ConfigError(
            f"layer: hidden needs layer_idx between 0 and {n_layers} (got {layer_idx!r}); SDXL's CLIP-L uses 11"
        )
    return layer_idx


class CLIPTextHolder(nn.Module):
    """Container that gives `CLIPTextModel` the `text_model.` prefix real SD files use."""

    def __init__(self, config):
        super().__init__()
        from transformers import CLIPTextModel

        self.text_model = CLIPTextModel(config)


class FrozenCLIPEmbedder(nn.Module):
    """Text -> [B, 77, hidden] context for the UNet's cross-attention. Frozen unless a caller unfreezes it.

    `layer`: "last" (SD v1) or "penultimate" (A1111 "CLIP skip 2"; the hidden state before the last
    block, passed through the final layer norm), or "hidden" with `layer_idx` (sgm's SDXL CLIP-L:
    transformers' `hidden_states[layer_idx]`, the output of the first `layer_idx` blocks, NO final norm).
    `columns` (this encoder's columns in a concatenated context / learned vector) and `embedding_key`
    (its key in SDXL embedding files) are set by GeneralConditioner; alone it owns all columns.
    """

    LAYERS = ("last", "penultimate", "hidden")
    returns_pooled = False  # SDXL pools from the OpenCLIP encoder only

    def __init__(
        self,
        version: str | None = None,
        max_length: int = 77,
        layer: str = "last",
        tokenizer_path: str | None = None,
        model_path: str | None = None,
        text_config: dict | None = None,
        freeze: bool = True,
        layer_idx: int | None = None,
        always_return_pooled: bool = False,
        **ignored,
    ):
        super().__init__()
        from transformers import CLIPTextConfig

        if layer not in self.LAYERS:
            raise ConfigError(f"cond_stage_config layer={layer!r}; choose one of: {', '.join(self.LAYERS)}")
        # `version` names a hub model in the paper configs; we never download, so it is only a hint.
        config = CLIPTextConfig(**{**VIT_L14_TEXT, **(text_config or {})})
        config._attn_implementation = "sdpa"
        self.layer_idx = _check_layer_idx(layer, layer_idx, config.num_hidden_layers)
        self.transformer = CLIPTextHolder(config)
        self.max_length = max_length
        self.layer = layer
        # sgm's CLIP-L may return CLIP's own pooled output; SDXL never uses it, so it is only accepted.
        self.always_return_pooled = always_return_pooled
        self.columns = slice(0, config.hidden_size)
        self.embedding_key: str | None = None
        self.tokenizer_subfolder = "tokenizer"
        self._tokenizer_args = (tokenizer_path, model_path)
        self._tokenizer = None
        if freeze:
            self.freeze()

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # lazy: loading the vocabulary costs ~1 s and tests often skip it
            self._tokenizer = load_tokenizer(
                *self._tokenizer_args, max_length=self.max_length, subfolder=self.tokenizer_subfolder
            )
        return self._tokenizer

    @property
    def text_model(self) -> nn.Module:
        return self.transformer.text_model

    @property
    def token_embedding(self) -> nn.Embedding:
        """The token embedding table: where textual inversion's learned vectors stand in for tokens."""
        return self.text_model.embeddings.token_embedding

    @property
    def width(self) -> int:
        """The context width (768 for SD 1.x's CLIP ViT-L)."""
        return int(self.token_embedding.weight.shape[1])

    def freeze(self) -> None:
        self.transformer.eval()
        for p in self.parameters():
            p.requires_grad = False

    def reset_buffers(self) -> None:
        """Recreate the non-persistent position ids after a build on the meta device."""
        emb = self.text_model.embeddings
        emb.position_ids = torch.arange(
            emb.position_embedding.num_embeddings, device=emb.position_embedding.weight.device
        ).expand(1, -1)

    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        """Prompts -> token ids [B, max_length] (BOS, tokens, EOS, EOS-padding), truncated to max_length."""
        texts = [text] if isinstance(text, str) else list(text)
        batch = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )
        return batch["input_ids"]

    def encode_embeddings(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run the text transformer on token embeddings [B, N, hidden] (positions are added here).

        This is the seam for textual inversion: callers splice learned vectors into the token
        embeddings and call this instead of patching CLIP.
        """
        tm = self.text_model
        hidden = tm.embeddings(inputs_embeds=inputs_embeds)
        n = hidden.shape[1]
        causal = torch.full((n, n), float("-inf"), dtype=hidden.dtype, device=hidden.device).triu(1)
        mask = causal[None, None].expand(hidden.shape[0], 1, n, n)
        for layer in tm.encoder.layers[: self.n_blocks]:  # run the blocks ourselves to stop early
            hidden = layer(hidden, mask)
        return hidden if self.layer == "hidden" else tm.final_layer_norm(hidden)

    @property
    def n_blocks(self) -> int:
        """How many blocks the context runs through."""
        n = len(self.text_model.encoder.layers)
        return {"last": n, "penultimate": n - 1}.get(self.layer, self.layer_idx)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.token_embedding.weight.device)
        return self.encode_embeddings(self.token_embedding(tokens))

    def forward(self, text: str | Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(text))

    def encode(self, text: str | Sequence[str]) -> torch.Tensor:
        return self(text)
