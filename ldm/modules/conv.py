"""A 2-D convolution that sidesteps oneDNN's slow kernel for wide inputs on small CPU feature maps.

On CPU, PyTorch runs nn.Conv2d through oneDNN. For the SD UNet's decoder convolutions that read the
concatenated skip connection (1920 or 2560 channels) at 8x8 or 4x4 pixels, oneDNN picks a kernel that
takes 2-4x longer than the same arithmetic as one matrix product over unfolded patches (measured on
2-core AMD EPYC, bf16 and fp32: 2560->1280 at 4x4, batch 1, 31 ms against 7 ms; forward and
backward-to-input 66 ms against 22 ms). Above 8x8 pixels or below ~1500 channels oneDNN is as fast or
faster, so everything else keeps the library path. The weights and state-dict keys are nn.Conv2d's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Measured crossover (see the module docstring): unfold+GEMM wins only for many channels on few pixels.
GEMM_MAX_PIXELS = 64
GEMM_MIN_IN_CHANNELS = 1536


def conv2d_as_gemm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """A stride-1, dilation-1, ungrouped convolution as unfold + one [B*H*W, C*k*k] x [C*k*k, O] product."""
    b, _, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=padding)  # [B, C*kh*kw, H*W]
    rows = cols.transpose(1, 2).reshape(b * h * w, -1)
    flat_weight = weight.reshape(out_channels, -1).t()
    y = torch.addmm(bias, rows, flat_weight) if bias is not None else rows @ flat_weight
    # Back to NCHW memory: a channels-last result would send the next oneDNN convolution down a slow path.
    return y.view(b, h, w, out_channels).permute(0, 3, 1, 2).contiguous()


class Conv2d(nn.Conv2d):
    """nn.Conv2d that runs as one GEMM where oneDNN's CPU kernel is measurably slow."""

    def uses_gemm(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.shape[-2] * x.shape[-1] <= GEMM_MAX_PIXELS
            and self.in_channels >= GEMM_MIN_IN_CHANNELS
            and self.kernel_size != (1, 1)  # a 1x1 convolution already is a GEMM in oneDNN
            and self.groups == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            # 'same' padding only for odd kernels keeps the output the input's size
            and all(2 * p + 1 == k for p, k in zip(self.padding, self.kernel_size))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_gemm(x):
            return conv2d_as_gemm(x, self.weight, self.bias, self.padding)
        return super().forward(x)
