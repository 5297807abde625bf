"""The UNet's Conv2d: the unfold+GEMM path it takes on CPU for wide inputs on small maps equals nn.Conv2d."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.conv import GEMM_MAX_PIXELS, GEMM_MIN_IN_CHANNELS, Conv2d
from ldm.modules.diffusionmodules.util import conv_nd

WIDE = GEMM_MIN_IN_CHANNELS


def _conv(in_ch=WIDE, out_ch=8, k=3, **kw) -> Conv2d:
    torch.manual_seed(0)
    return Conv2d(in_ch, out_ch, k, padding=kw.pop("padding", k // 2), **kw)


@pytest.mark.parametrize("hw", [(4, 4), (8, 8), (2, 7)])
def test_gemm_path_matches_the_library_convolution_and_its_gradients(hw):
    conv = _conv()
    x = torch.randn(2, WIDE, *hw, requires_grad=True)
    assert conv.uses_gemm(x)
    y = conv(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = F.conv2d(ref_x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    assert y.is_contiguous()  # NCHW memory, so the next oneDNN convolution keeps its fast path
    g = torch.randn_like(ref)
    (w_grad,) = torch.autograd.grad(y, conv.weight, g, retain_graph=True)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-4, atol=1e-4)
    ref_w_grad = torch.autograd.grad(F.conv2d(x.detach(), conv.weight, conv.bias, padding=1), conv.weight, g)[0]
    torch.testing.assert_close(w_grad, ref_w_grad, rtol=1e-3, atol=1e-3)


def test_gemm_path_in_bf16_stays_within_bf16_rounding_of_fp32():
    conv = _conv()
    x = torch.randn(1, WIDE, 4, 4)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    half = conv.to(torch.bfloat16)
    y = half(x.to(torch.bfloat16)).float()
    assert (y - ref).abs().max() <= 0.02 * ref.abs().max()


def test_gemm_path_without_bias():
    conv = _conv(bias=False)
    x = torch.randn(1, WIDE, 3, 3)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, None, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["big map", "few channels", "1x1", "stride", "valid padding", "reflect"])
def test_everything_else_keeps_the_library_path(case):
    side = int(GEMM_MAX_PIXELS**0.5)
    conv, x = _conv(), torch.randn(1, WIDE, side, side)
    if case == "big map":
        x = torch.randn(1, WIDE, side * 2, side)
    elif case == "few channels":
        conv, x = _conv(in_ch=WIDE - 1), torch.randn(1, WIDE - 1, side, side)
    elif case == "1x1":
        conv = _conv(k=1)
    elif case == "stride":
        conv = _conv(stride=2)
    elif case == "valid padding":
        conv = _conv(padding=0)
    elif case == "reflect":
        conv = _conv(padding_mode="reflect")
    assert not conv.uses_gemm(x)
    torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))


def test_unet_convolutions_are_the_project_conv_with_the_library_state_dict_keys():
    conv = conv_nd(2, 4, 8, 3, padding=1)
    assert isinstance(conv, Conv2d) and isinstance(conv, nn.Conv2d)
    assert set(conv.state_dict()) == {"weight", "bias"}
