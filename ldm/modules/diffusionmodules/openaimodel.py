"""The Stable Diffusion UNet (eps-prediction), in the CompVis checkpoint layout.

Module names (time_embed, input_blocks, middle_block, output_blocks, out; in_layers, emb_layers,
out_layers, skip_connection, op) are those of real SD v1.x files, which therefore load unchanged. SDXL's
UNet (sgm's keys: `adm_in_channels` + `num_classes: sequential` -> `label_emb`, a `transformer_depth` per
level) is the same class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ldm.errors import ConfigError
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.util import (
    avg_pool_nd,
    checkpoint,
    conv_nd,
    normalization,
    timestep_embedding,
    zero_module,
)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence whose members take what they need: ResBlocks the time embedding, transformers the context."""

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None = None,
        upsample_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, upsample_size)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = conv_nd(dims, channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        # `size`: the skip's spatial size, so a side that did not halve evenly (odd latent sides) comes back
        # to its own length, as diffusers' upsample_size does; for even sides it is exactly 2x.
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(int(s) for s in size), mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op = conv_nd(dims, channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = avg_pool_nd(dims, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding (added as a per-channel bias)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        dims: int = 2,
        use_checkpoint: bool = False,
        use_scale_shift_norm: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels, groups=norm_groups), nn.SiLU(), conv_nd(dims, channels, out_channels, 3, padding=1)
        )
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(out_channels, groups=norm_groups),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_module(conv_nd(dims, out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else conv_nd(dims, channels, out_channels, 1)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, (x, emb), self.use_checkpoint)


class UNetModel(nn.Module):
    """UNet with cross-attention; `forward(x, timesteps, context)` predicts the noise eps.

    Keyword names follow the CompVis configs so `v1-inference.yaml` instantiates it as it is.
    `upcast_attention` (diffusers' name; on in the v2 configs): attention in fp32 when the weights are
    fp16/bf16, against SD 2.x's fp16 overflow. `use_fp16` is accepted and ignored: --precision decides.
    SDXL: `adm_in_channels` with `num_classes: "sequential"` adds `label_emb` (the vector y [B, adm] is
    projected and added to the time embedding); `transformer_depth` is an int or one depth per level
    (`transformer_depth_middle` defaults to the last level's). Other sgm keys (spatial_transformer_attn_type,
    ...) are accepted and ignored.
    """

    def __init__(
        self,
        image_size: int | None = None,  # unused (the CompVis configs carry it; sgm's do not)
        *,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = -1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        use_spatial_transformer: bool = True,
        transformer_depth: int | Sequence[int] = 1,
        context_dim: int | None = None,
        legacy: bool = False,
        use_linear_in_transformer: bool = False,
        norm_groups: int = 32,
        upcast_attention: bool = False,
        num_classes: int | str | None = None,
        adm_in_channels: int | None = None,
        transformer_depth_middle: int | None = None,
        **ignored,
    ):
        super().__init__()
        if not use_spatial_transformer or context_dim is None:
            raise ValueError(
                "UNetModel: this project supports the text-conditioned SD UNet only "
                "(set use_spatial_transformer: true and context_dim)"
            )
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("UNetModel: set num_heads or num_head_channels in unet_config")
        self.in_channels, self.out_channels, self.model_channels = in_channels, out_channels, model_channels
        self.context_dim = context_dim
        self._head_args = (num_heads, num_head_channels, legacy)
        time_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.label_emb = _label_embedding(num_classes, adm_in_channels, time_dim)
        depths = _level_depths(transformer_depth, len(channel_mult))
        depth_middle = depths[-1] if transformer_depth_middle is None else int(transformer_depth_middle)

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, time_dim, dropout, ch_out, dims, use_checkpoint, use_scale_shift_norm, norm_groups)

        def attn(ch: int, depth: int) -> SpatialTransformer:
            heads, d_head = self._heads(ch)
            return SpatialTransformer(
                ch,
                heads,
                d_head,
                depth=depth,
                context_dim=context_dim,
                use_linear=use_linear_in_transformer,
                use_checkpoint=use_checkpoint,
                norm_groups=norm_groups,
                upcast_attention=upcast_attention,
            )

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(dims, in_channels, model_channels, 3, padding=1))]
        )
        skip_channels, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attn(ch, depths[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, conv_resample, dims)))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, depth_middle), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attn(ch, depths[level]))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, conv_resample, dims))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch, groups=norm_groups),
            nn.SiLU(),
            zero_module(conv_nd(dims, model_channels, out_channels, 3, padding=1)),
        )

    def _heads(self, ch: int) -> tuple[int, int]:
        num_heads, num_head_channels, legacy = self._head_args
        if num_head_channels == -1:
            d_head = ch // num_heads
        else:
            num_heads, d_head = ch // num_head_channels, num_head_channels
        if legacy:  # old configs used the full width per head for the transformer
            d_head = ch // num_heads
        return num_heads, d_head

    @property
    def uses_vector(self) -> bool:
        """Whether forward needs `y` (SDXL's pooled text + size vector): the UNet has a `label_emb`."""
        return self.label_emb is not None

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        if (y is None) == self.uses_vector:
            raise ValueError(
                "UNetModel: pass the vector y exactly when the UNet has label_emb (adm_in_channels): "
                f"this UNet {'needs' if self.uses_vector else 'takes no'} y"
            )
        if y is not None:
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"UNetModel: y has batch {y.shape[0]}, x has {x.shape[0]}")
            emb = emb + self.label_emb(y.to(emb.dtype))
        h = x.to(emb.dtype)
        context = None if context is None else context.to(emb.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb, context, upsample_size=skips[-1].shape[2:] if skips else None)
        return self.out(h).to(x.dtype)


def _label_embedding(num_classes: int | str | None, adm_in_channels: int | None, time_dim: int) -> nn.Module | None:
    """SDXL's `label_emb` (keys label_emb.0.0 / label_emb.0.2): y [B, adm_in_channels] -> the time embedding."""
    if num_classes is None and adm_in_channels is None:
        return None
    if num_classes != "sequential" or not adm_in_channels:
        raise ConfigError(
            f"UNetModel: num_classes={num_classes!r} is not supported; SDXL sets num_classes: sequential "
            "with adm_in_channels (the vector width, 2816)"
        )
    return nn.Sequential(
        nn.Sequential(nn.Linear(int(adm_in_channels), time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
    )


def _level_depths(transformer_depth: int | Sequence[int], levels: int) -> list[int]:
    """One transformer depth per channel_mult level (an int applies to every level)."""
    if isinstance(transformer_depth, int):
        return [transformer_depth] * levels
    depths = [int(d) for d in transformer_depth]
    if len(depths) != levels:
        raise ConfigError(f"UNetModel: transformer_depth {depths} needs one depth per channel_mult level ({levels})")
    return depths
