"""OpenCLIP's text transformer in the checkpoint layout of SD 2.x (`cond_stage_model.model.*`).

Parameter names and shapes are exactly OpenCLIP's `CLIP` text tower (the visual tower deleted, as
Stability's FrozenOpenCLIPEmbedder does), so a real file loads strictly:
`token_embedding.weight` [V, W], `positional_embedding` [C, W], `transformer.resblocks.{i}.ln_1/ln_2`,
`.attn.in_proj_weight` [3W, W] (q, k, v stacked by rows) + `.attn.in_proj_bias`, `.attn.out_proj`,
`.mlp.c_fc` [4W, W], `.mlp.c_proj` [W, 4W], `ln_final`, `text_projection` [W, W] (used as `x @ P`),
`logit_scale` (a scalar). Blocks are pre-LN with exact GELU and a causal mask; there is no padding mask
(OpenCLIP attends to its 0-padding like any token, and the causal mask keeps it out of earlier positions).
No open_clip import, no download: the weights come from the SD file.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.attention import attention


class CausalSelfAttention(nn.Module):
    """nn.MultiheadAttention's parameter layout (`in_proj_weight`, `in_proj_bias`, `out_proj`), run
    with ldm.modules.attention.attention (scaled_dot_product_attention, or fp32 matmuls for small CPU inputs) and a
    causal mask."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, w // self.heads).transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with an exact-GELU MLP of width 4W."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        hidden = width * mlp_ratio
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Holds the blocks under `resblocks` (OpenCLIP's name)."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class OpenCLIPTextTransformer(nn.Module):
    """The text tower. `hidden_states(embeds, n_blocks)` runs the first `n_blocks` blocks on token
    embeddings [B, N, W] (positions added here) and applies `ln_final`; `block_outputs` keeps the raw
    outputs of chosen blocks (SDXL: the penultimate's for the context, the last's for the pooled vector)."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        context_length: int = 77,
        vocab_size: int = 49408,
        projection: bool = True,
        logit_scale: bool = True,
    ):
        super().__init__()
        self.width, self.layers, self.heads = width, layers, heads
        self.context_length, self.vocab_size = context_length, vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        # Unused by SD 2 conditioning; kept so a loaded file re-exports unchanged. A diffusers SD 2.x
        # text encoder has neither (projection=False builds the tower without them); a diffusers SDXL
        # text_encoder_2 has the projection (SDXL's pooled vector) but no logit_scale (logit_scale=False).
        self.projection = projection
        self.has_logit_scale = projection and logit_scale
        if projection:
            self.text_projection = nn.Parameter(torch.empty(width, width))
        if self.has_logit_scale:
            self.logit_scale = nn.Parameter(torch.empty(()))
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        """OpenCLIP's initialisation (a no-op cost on the meta device; a loaded file overwrites it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        if self.projection:
            nn.init.normal_(self.text_projection, std=attn_std)
        if self.has_logit_scale:
            self.logit_scale.fill_(math.log(1 / 0.07))

    def hidden_states(self, embeds: torch.Tensor, n_blocks: int) -> torch.Tensor:
        (x,) = self.block_outputs(embeds, (n_blocks,))
        return self.ln_final(x)

    def block_outputs(self, embeds: torch.Tensor, after: tuple[int, ...]) -> list[torch.Tensor]:
        """The raw (no `ln_final`) hidden states after each count of blocks in `after`, running the
        tower once up to the largest count."""
        n = embeds.shape[1]
        if n > self.context_length:
            raise ValueError(f"{n} token positions; the text encoder takes at most {self.context_length}")
        x = embeds + self.positional_embedding[:n].to(embeds.dtype)
        outputs = {0: x}
        for i, block in enumerate(self.transformer.resblocks[: max(after)], start=1):
            x = block(x)
            if i in after:
                outputs[i] = x
        return [outputs[k] for k in after]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """OpenCLIP's text projection, applied as `x @ P` (P is [W, out]; never as an nn.Linear weight)."""
        return x @ self.text_projection.to(x.dtype)
