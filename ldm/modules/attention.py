"""Cross-attention transformer used inside the SD UNet, on torch's scaled_dot_product_attention.

Parameter names follow the CompVis layout (to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2,
norm1..3, proj_in/proj_out) so real Stable Diffusion checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.diffusionmodules.util import checkpoint, normalization, zero_module

# CPU attention with at most this many scores (batch x heads x queries x keys) runs as plain fp32 matmuls instead
# of torch's CPU flash kernel, whose fixed cost dominates at SDXL's 8x8 and 16x16 levels and in the text towers
# (bf16, 1 thread, forward + backward: 2.3 ms against 6.4 ms at 20 heads x 64 x 77). The fp32 path is at least as
# accurate (softmax and both products in fp32). Larger maps (1024 px) keep flash, which holds no score matrix.
MATH_ATTENTION_MAX_SCORES = 1 << 20


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, H, N, d] heads, as F.scaled_dot_product_attention (no mask, no dropout)."""
    scores = q.shape[:-1].numel() * k.shape[-2]
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and scores <= MATH_ATTENTION_MAX_SCORES:
        return _fp32_attention(q, k, v, is_causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _fp32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> torch.Tensor:
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if is_causal:  # top-left aligned, as F.scaled_dot_product_attention's is_causal
        n, m = scores.shape[-2:]
        future = torch.ones(n, m, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention of x over a context (itself when context is None).

    `upcast`: with fp16/bf16 weights, compute the attention (softmax(QK^T)V) in fp32. SD 2.x's QK^T
    overflows fp16 (NaN latents, black images); Stability forces fp32 there, diffusers calls it
    `upcast_attention`. A no-op in fp32.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        upcast: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.upcast = upcast
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (self._split_heads(f(t)) for f, t in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
        if self.upcast and q.dtype in (torch.float16, torch.bfloat16):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            out = attention(q, k, v)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


class BasicTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        d_head: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        use_checkpoint: bool = False,
        upcast_attention: bool = False,
    ):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head, dropout=dropout, upcast=upcast_attention)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(
            dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, dropout=dropout, upcast=upcast_attention
        )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.use_checkpoint = use_checkpoint

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context=context)
        return x + self.ff(self.norm3(x))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return checkpoint(self._forward, (x, context), self.use_checkpoint)


class SpatialTransformer(nn.Module):
    """Attention over the pixels of a feature map: norm, project in, transformer blocks, project out."""

    def __init__(
        self,
        in_channels: int,
        n_heads: int,
        d_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        context_dim: int | None = None,
        use_linear: bool = False,
        use_checkpoint: bool = False,
        norm_groups: int = 32,
        upcast_attention: bool = False,
    ):
        super().__init__()
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.norm = normalization(in_channels, eps=1e-6, groups=norm_groups)
        # SD v1 projects with 1x1 convolutions, SD 2.x with linear layers: both layouts exist in files.
        self.proj_in = nn.Linear(in_channels, inner) if use_linear else nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                n_heads,
                d_head,
                dropout=dropout,
                context_dim=context_dim,
                use_checkpoint=use_checkpoint,
                upcast_attention=upcast_attention,
            )
            for _ in range(depth)
        )
        proj_out = nn.Linear(inner, in_channels) if use_linear else nn.Conv2d(inner, in_channels, 1)
        self.proj_out = zero_module(proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        # A strided [B, HW, C] view, deliberately not made contiguous: on CPU bf16 the copy made a UNet
        # forward ~45% slower (2.1 s against 1.45 s at 256 px, batch 2) and did not speed up training.
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context=context)
        if self.use_linear:
            x = self.proj_out(x)
        # Back in the residual's memory layout: the [B, HW, C] -> [B, C, H, W] view is channels-last, which made
        # every following oneDNN convolution copy its weight to channels-last (forward and backward, each step).
        x = x.transpose(1, 2).reshape(b, -1, h, w).contiguous(memory_format=_memory_format(residual))
        if not self.use_linear:
            x = self.proj_out(x)
        return x + residual


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor laid out so (and not also contiguous), else contiguous_format."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
