"""FrozenOpenCLIPEmbedder: the SD 2.x text encoder (OpenCLIP ViT-H/14 text tower), built from a config.

The config is Stability's (`arch: ViT-H-14`, `version`, `layer: penultimate`, `freeze`); tiny test
configs override the arch with `text_config: {width, layers, heads, context_length, vocab_size}`.
The weights come from the SD file (`cond_stage_model.model.*`, OpenCLIP's own key layout, see
open_clip_text.py), so building never downloads anything and open_clip is not needed.

Same public interface as FrozenCLIPEmbedder (SD 1.x), so one can stand in for the other: `tokenizer`,
`tokenize`, `encode_embeddings` (the textual-inversion seam), `encode_tokens`, `forward`/`encode`,
`max_length`, `layer`, `freeze`, `reset_buffers`, and `text_model.embeddings.token_embedding`.
Differences:
- padding is id 0 ("!"), not EOS; `tokenizer.pad_token_id` says 0 and the tokenizer pads by id
  (open_clip_tokenizer.py). Rows are still BOS, tokens, EOS, padding, 77 positions.
- `layer: penultimate` is SD 2's conditioning: `ln_final(output of block L-2)`; the last block,
  `text_projection` and `logit_scale` are parameters (for strict loading and re-export) but unused.
  A diffusers SD 2.x folder holds only the blocks SD uses and no projection: the loader builds it as
  `layers: L-1, layer: last, projection: False`, the same function (ldm/diffusers_sd2.py). A diffusers
  SDXL text_encoder_2 lacks only `logit_scale`: built with `logit_scale: False` (ldm/diffusers_sdxl.py).
  The default is "last", as in Stability's class.
- `text_model` is only a view reaching `embeddings.token_embedding`; new code should use
  `token_embedding` and `width` (the context width: 1024 for ViT-H, 1280 for bigG).
- the MLP is exact GELU (SD 1's CLIP uses quick-GELU); no pooling is computed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from ldm.errors import ConfigError
from ldm.modules.encoders.open_clip_text import OpenCLIPTextTransformer
from ldm.modules.encoders.open_clip_tokenizer import EOS_ID, load_open_clip_tokenizer

log = logging.getLogger(__name__)

_COMMON = dict(context_length=77, vocab_size=49408)
# Text towers of the OpenCLIP models Stable Diffusion uses (SD 2.x; SDXL's second encoder).
ARCHS = {
    "ViT-H-14": dict(width=1024, layers=24, heads=16, **_COMMON),
    "ViT-bigG-14": dict(width=1280, layers=32, heads=20, **_COMMON),
}


def text_tower_config(arch: str, text_config: dict | None, layer: str, max_length: int) -> dict:
    """The arch's sizes with `text_config` overrides, checked so a bad value is one ConfigError."""
    if arch not in ARCHS:
        raise ConfigError(f"cond_stage_config arch={arch!r} is not known; choose one of: {', '.join(ARCHS)}")
    overrides = dict(text_config or {})
    unknown = sorted(set(overrides) - set(ARCHS[arch]))
    if unknown:
        raise ConfigError(
            f"cond_stage_config text_config has unknown keys {unknown}; allowed: {', '.join(ARCHS[arch])}"
        )
    sizes = {**ARCHS[arch], **overrides}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"cond_stage_config text_config.{key}={value!r}; give a positive integer")
    if sizes["width"] % sizes["heads"]:
        raise ConfigError(
            f"cond_stage_config text_config width={sizes['width']} is not divisible by heads={sizes['heads']}"
        )
    if layer == "penultimate" and sizes["layers"] < 2:
        raise ConfigError("cond_stage_config layer='penultimate' needs text_config.layers >= 2")
    if max_length > sizes["context_length"]:
        raise ConfigError(
            f"cond_stage_config max_length={max_length} exceeds the text encoder's "
            f"context_length={sizes['context_length']}"
        )
    return sizes


class FrozenOpenCLIPEmbedder(nn.Module):
    """Text -> [B, 77, W] context for the UNet's cross-attention. Frozen unless a caller unfreezes it.

    `columns` (this encoder's columns in a concatenated context / learned vector) and `embedding_key`
    (its key in SDXL embedding files) are set by GeneralConditioner; alone it owns all columns."""

    LAYERS = ("last", "penultimate")
    returns_pooled = False

    def __init__(
        self,
        arch: str = "ViT-H-14",
        version: str | None = "laion2b_s32b_b79k",
        device: str | None = None,
        max_length: int = 77,
        freeze: bool = True,
        layer: str = "last",
        tokenizer_path: str | None = None,
        model_path: str | None = None,
        text_config: dict | None = None,
        projection: bool = True,
        logit_scale: bool = True,
        **ignored,
    ):
        super().__init__()
        if layer not in self.LAYERS:
            raise ConfigError(f"cond_stage_config layer={layer!r}; choose one of: {', '.join(self.LAYERS)}")
        if ignored:
            log.warning("FrozenOpenCLIPEmbedder ignores cond_stage_config params %s", sorted(ignored))
        # `version` names OpenCLIP pretrained weights and `device` a placement in the original configs;
        # the weights come from the SD file and the model is moved as a whole, so both are only hints.
        self.model = OpenCLIPTextTransformer(
            **text_tower_config(arch, text_config, layer, max_length), projection=projection, logit_scale=logit_scale
        )
        self.arch, self.version = arch, version
        self.max_length = max_length
        self.layer = layer
        self.columns = slice(0, self.model.width)
        self.embedding_key: str | None = None
        self.tokenizer_subfolder = "tokenizer"
        self._tokenizer_args = (tokenizer_path, model_path)
        self._tokenizer = None
        if freeze:
            self.freeze()

    @property
    def n_blocks(self) -> int:
        """How many blocks the conditioning runs through (all for "last", all but one for "penultimate")."""
        return self.model.layers - (1 if self.layer == "penultimate" else 0)

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # lazy: loading the vocabulary costs ~1 s and tests often skip it
            self._tokenizer = load_open_clip_tokenizer(
                *self._tokenizer_args, max_length=self.max_length, subfolder=self.tokenizer_subfolder
            )
        return self._tokenizer

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.token_embedding

    @property
    def width(self) -> int:
        return int(self.model.width)

    @property
    def text_model(self) -> SimpleNamespace:
        """Where FrozenCLIPEmbedder's callers look for the token embedding (not a module: no keys)."""
        return SimpleNamespace(embeddings=SimpleNamespace(token_embedding=self.model.token_embedding))

    def freeze(self) -> None:
        self.model.eval()
        for p in self.parameters():
            p.requires_grad = False

    def reset_buffers(self) -> None:
        """Nothing to recreate after a build on the meta device (the causal mask is not a buffer)."""

    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        """Prompts -> token ids [B, max_length] (BOS, tokens, EOS, 0-padding), truncated to max_length
        with EOS kept last."""
        texts = [text] if isinstance(text, str) else list(text)
        batch = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )
        return batch["input_ids"]

    def encode_embeddings(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run the text tower on token embeddings [B, N, W] (positions are added here).

        The seam for textual inversion: callers splice learned vectors into the token embeddings and
        call this.
        """
        return self.model.hidden_states(inputs_embeds, self.n_blocks)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.token_embedding.weight.device)
        return self.encode_embeddings(self.token_embedding(tokens))

    def forward(self, text: str | Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(text))

    def encode(self, text: str | Sequence[str]) -> torch.Tensor:
        return self(text)


def eos_index(tokens: torch.Tensor, eos_id: int = EOS_ID) -> torch.Tensor:
    """Position of the first EOS in each row of `tokens` [B, N] -> LongTensor [B].

    Where to pool. Not `tokens.argmax(-1)` (OpenCLIP's and transformers' shortcut): a placeholder id
    appended to the vocabulary (>= 49408) is larger than EOS and would win."""
    is_eos = tokens == eos_id
    if not bool(is_eos.any(dim=1).all()):
        raise ValueError("a token row has no EOS id; tokenize with the encoder's tokenizer (BOS, tokens, EOS)")
    return is_eos.int().argmax(dim=1)


class FrozenOpenCLIPEmbedder2(FrozenOpenCLIPEmbedder):
    """sgm's second SDXL text encoder (OpenCLIP ViT-bigG-14 in sd_xl_base.yaml): the same tower and keys
    (`conditioner.embedders.1.model.*`), two differences from SD 2.x's class:

    - `legacy: False` (SDXL): the context is the raw output of the chosen layer, no `ln_final`;
      `legacy: True` is SD 2.x's `ln_final(layer)`.
    - `always_return_pooled: True` (SDXL): the pooled vector, `ln_final(output of the LAST block)` at the
      EOS position `@ text_projection` (`encode_embeddings_pooled`), which enters the UNet's vector `y`.
    """

    def __init__(
        self,
        arch: str = "ViT-H-14",
        version: str | None = "laion2b_s32b_b79k",
        device: str | None = None,
        max_length: int = 77,
        freeze: bool = True,
        layer: str = "last",
        always_return_pooled: bool = False,
        legacy: bool = True,
        **kwargs,
    ):
        super().__init__(
            arch=arch, version=version, device=device, max_length=max_length, freeze=freeze, layer=layer, **kwargs
        )
        if always_return_pooled and legacy:
            raise ConfigError("FrozenOpenCLIPEmbedder2 always_return_pooled: True needs legacy: False (as in SDXL)")
        if always_return_pooled and not self.model.projection:
            raise ConfigError("FrozenOpenCLIPEmbedder2 always_return_pooled: True needs the text projection")
        self.legacy = legacy
        self.always_return_pooled = always_return_pooled

    @property
    def returns_pooled(self) -> bool:  # type: ignore[override]
        return self.always_return_pooled

    def encode_embeddings(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            return super().encode_embeddings(inputs_embeds)
        (context,) = self.model.block_outputs(inputs_embeds, (self.n_blocks,))
        return context

    def encode_embeddings_pooled(
        self, inputs_embeds: torch.Tensor, eos_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(context [B, N, W], pooled [B, W_proj]) from one run of the tower; `eos_index` [B] is where
        each row's EOS is (see `eos_index`), never found by argmax over ids."""
        context, last = self.model.block_outputs(inputs_embeds, (self.n_blocks, self.model.layers))
        if self.legacy:
            context = self.model.ln_final(context)
        rows = torch.arange(last.shape[0], device=last.device)
        final = self.model.ln_final(last[rows, eos_index.to(last.device)])
        return context, self.model.project(final)

    def encode_tokens_pooled(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, N] -> (context, pooled), pooled at each row's first EOS."""
        tokens = tokens.to(self.token_embedding.weight.device)
        return self.encode_embeddings_pooled(self.token_embedding(tokens), eos_index(tokens))
