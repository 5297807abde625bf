"""`upcast_attention`: attention in fp32 under fp16/bf16 weights (SD 2.x's fp16 overflow), a no-op in fp32."""

from __future__ import annotations

import copy

import pytest
import torch
from sd_helpers import TINY_CONFIG, TINY_V2_CONFIG, load_config, randomize_

import ldm.modules.attention as attention
from ldm.modules.attention import CrossAttention
from ldm.util import instantiate_from_config

ROOT_CONFIGS = "configs/stable-diffusion"


def _huge_logit_attention(upcast: bool) -> CrossAttention:
    """q and k scaled so q.k^T is ~1e6: far past fp16's 65504, while q and k themselves fit in fp16."""
    torch.manual_seed(0)
    attn = CrossAttention(8, heads=1, dim_head=8, upcast=upcast)
    with torch.no_grad():
        attn.to_q.weight.copy_(torch.eye(8) * 300)
        attn.to_k.weight.copy_(torch.eye(8) * 300)
    return attn


def _tiny_unet(config_path, upcast: bool) -> torch.nn.Module:
    unet_config = copy.deepcopy(load_config(config_path).model.params.unet_config)
    unet_config.params.upcast_attention = upcast
    torch.manual_seed(0)
    return randomize_(instantiate_from_config(unet_config), seed=1).eval()


@pytest.mark.parametrize("config_path", [TINY_CONFIG, TINY_V2_CONFIG], ids=["v1", "v2"])
def test_upcast_changes_nothing_in_fp32(config_path):
    plain, upcast = _tiny_unet(config_path, False), _tiny_unet(config_path, True)
    upcast.load_state_dict(plain.state_dict())
    assert all(m.upcast for m in upcast.modules() if isinstance(m, CrossAttention))
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(plain(x, t, ctx), upcast(x, t, ctx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp16_attention_with_huge_logits_is_finite_and_right_with_upcast(dtype):
    attn = _huge_logit_attention(upcast=True)
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        reference = attn(x)
        if dtype is torch.float16:  # the naive fp16 product overflows: the case upcasting is for
            q, k = attn.to_q(x).half(), attn.to_k(x).half()
            assert not (q @ k.transpose(-1, -2)).isfinite().all()
        out = attn.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and out.isfinite().all()
    torch.testing.assert_close(out.float(), reference, atol=0.02, rtol=0.02)


@pytest.mark.parametrize(
    "upcast, dtype, expected",
    [
        (True, torch.float16, torch.float32),
        (False, torch.float16, torch.float16),
        (True, torch.bfloat16, torch.float32),
        (True, torch.float32, torch.float32),
    ],
)
def test_upcast_runs_the_attention_kernel_in_fp32(monkeypatch, upcast, dtype, expected):
    seen = []
    kernel = attention.F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return kernel(q, k, v, *args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(attention, "MATH_ATTENTION_MAX_SCORES", 0)  # small CPU inputs would take the fp32 matmuls
    attn = _huge_logit_attention(upcast).to(dtype)
    with torch.no_grad():
        out = attn(torch.randn(1, 4, 8, dtype=dtype))
    assert seen == [(expected,) * 3]
    assert out.dtype == dtype


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_small_cpu_attention_matches_the_kernel_and_its_gradients(dtype, is_causal):
    """The fp32-matmul path for small CPU inputs: scaled_dot_product_attention's values and gradients, to the
    output dtype's rounding."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, n, 16, dtype=dtype, requires_grad=True) for n in (12, 12, 12))
    grad_out = torch.randn(1, 4, 12, 16, dtype=dtype)
    results = []
    for fn in (attention.attention, _sdpa_in_fp64):
        out = fn(q, k, v, is_causal=is_causal)
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        results.append([out, *grads])
    for got, want in zip(*results):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want.double(), atol=2e-2, rtol=2e-2)


def _sdpa_in_fp64(q, k, v, is_causal):
    f64 = [t.double() for t in (q, k, v)]
    return torch.nn.functional.scaled_dot_product_attention(*f64, is_causal=is_causal)


@pytest.mark.parametrize(
    "name, expected",
    [("v1-inference.yaml", False), ("v2-inference.yaml", True), ("v2-inference-v.yaml", True)],
)
def test_upcast_is_on_in_the_v2_configs_only(name, expected):
    from sd_helpers import ROOT

    params = load_config(ROOT / ROOT_CONFIGS / name).model.params.unet_config.params
    assert bool(params.get("upcast_attention", False)) is expected
