"""FP8 attention: the kernel against its reference on fresh random e4m3 operands, with e4m3 and with
16-bit values, masked keys and several launches. The kernel's one rounding the reference lacks is P
in e4m3 (about 3% per probability, averaged over many keys), so e4m3 values are compared within a
tolerance that a wrong scale or a missed mask would exceed many times over."""
from __future__ import annotations

import math

import pytest
import torch

from morphcam.kernels.attention_fp8 import attention_fp8, attention_fp8_ref

E4M3 = torch.float8_e4m3fn


def _operands(h, lq, length, dh, block_n, pv_fp8, device, seed, masked=()):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(lq, h, dh, generator=g).clamp(-4, 4).to(E4M3).transpose(0, 1)  # token-major
    q_scale = (torch.rand(lq, h, generator=g) + 0.25).t()  # (H, Lq), strided
    k = torch.randn(h, length, dh, generator=g).clamp(-4, 4).to(E4M3)
    k_scale = torch.rand(h, length // block_n, generator=g) + 0.25
    if pv_fp8:
        v = (torch.randn(h, dh, length, generator=g) * 50).clamp(-448, 448).to(E4M3)
        v_scale = torch.rand(h, dh, generator=g) * 0.05 + 0.01
    else:
        v, v_scale = torch.randn(h, length, dh, generator=g).half(), None
    bias = torch.zeros(length)
    for lo, hi in masked:
        bias[lo:hi] = float("-inf")
    ops_ = [q, q_scale, k, k_scale, v, v_scale, bias]
    return [t.to(device) if t is not None else None for t in ops_]


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("pv_fp8", [True, False])
@pytest.mark.parametrize("h,lq,length,dh,block_n,block_m", [
    (1, 16, 64, 32, 32, 16), (2, 40, 96, 32, 32, 16), (3, 17, 128, 32, 64, 32),
])
def test_kernel_is_the_reference(h, lq, length, dh, block_n, block_m, pv_fp8, device):
    ops_ = _operands(h, lq, length, dh, block_n, pv_fp8, device, seed=lq + length, masked=[(length - block_n // 2, length)])
    out = attention_fp8(*ops_, block_n, torch.float32, block_m=block_m, num_warps=4, num_stages=1)
    ref = attention_fp8_ref(*ops_, block_n, torch.float32)
    assert out.shape == (h, lq, dh) and out.dtype == torch.float32
    assert out.transpose(0, 1).is_contiguous()  # token-major memory
    # 16-bit values: only the dot's rounding differs; e4m3 P: a few percent at most
    assert _rel(out, ref) < (0.03 if pv_fp8 else 1e-3)


def test_masked_keys_take_no_weight(device):
    """Keys under -inf bias change nothing, whatever their values; a fully masked block is skipped."""
    h, lq, length, dh, bn = 2, 16, 128, 32, 32
    ops_ = _operands(h, lq, length, dh, bn, True, device, seed=3, masked=[(32, 64), (96, 128)])
    out = attention_fp8(*ops_, bn, torch.float32, block_m=16, num_warps=4, num_stages=1)
    v = ops_[4].clone()
    v[:, :, 32:64] = torch.full_like(v[:, :, 32:64], 448.0)
    v[:, :, 96:] = torch.full_like(v[:, :, 96:], -448.0)
    again = attention_fp8(*ops_[:4], v, *ops_[5:], bn, torch.float32, block_m=16, num_warps=4, num_stages=1)
    assert torch.equal(out, again)


def test_scales_enter_as_documented(device):
    """Doubling a query row's scale doubles its logits: the same as halving the softmax temperature."""
    h, lq, length, dh, bn = 1, 16, 64, 32, 32
    q, qs, k, ks, v, vs, bias = _operands(h, lq, length, dh, bn, False, device, seed=5)
    out = attention_fp8(q, qs * 2, k, ks, v, vs, bias, bn, torch.float32, block_m=16, num_warps=4, num_stages=1)
    logits = (q.float() * qs[..., None] * 2) @ (k.float() * ks.repeat_interleave(bn, 1)[..., None]).transpose(1, 2)
    want = torch.softmax(logits / math.sqrt(dh), -1) @ v.float()
    assert _rel(out, want) < 1e-3


def test_bad_layouts_are_refused(device):
    h, lq, length, dh, bn = 1, 16, 64, 32, 32
    q, qs, k, ks, v, vs, bias = _operands(h, lq, length, dh, bn, True, device, seed=1)
    with pytest.raises(ValueError, match="multiple of block_n"):
        attention_fp8(q, qs, k, ks, v, vs, bias, 48, torch.float32)
    with pytest.raises(ValueError, match="transposed"):
        attention_fp8(q, qs, k, ks, v.transpose(1, 2), vs, bias, bn, torch.float32)
    with pytest.raises(ValueError, match="at least 32"):
        attention_fp8(q, qs, k, ks.repeat_interleave(2, 1), v, vs, bias, 16, torch.float32)


@pytest.mark.gpu
def test_bf16_output_on_the_gpu():
    """Compiled at the real launch (128-row tiles, 8 warps, e4m3 tensor cores) on a wan-like head count."""
    h, lq, length, dh, bn = 4, 300, 1024, 128, 128
    ops_ = _operands(h, lq, length, dh, bn, True, "cuda", seed=7, masked=[(1000, 1024)])
    out = attention_fp8(*ops_, bn, torch.bfloat16)
    ref = attention_fp8_ref(*ops_, bn, torch.float32)
    assert out.dtype == torch.bfloat16 and _rel(out, ref) < 0.03


@pytest.mark.parametrize("pv_fp8", [True, False])
def test_int8_queries_and_keys(pv_fp8, device):
    """Q and K in int8 (SageAttention's choice): the integer dot, then the same scales."""
    h, lq, length, dh, bn = 2, 40, 96, 32, 32
    q, qs, k, ks, v, vs, bias = _operands(h, lq, length, dh, bn, pv_fp8, device, seed=11, masked=[(90, 96)])
    g = torch.Generator().manual_seed(12)
    q = torch.randint(-127, 128, (lq, h, dh), generator=g, dtype=torch.int8).transpose(0, 1).to(device)
    k = torch.randint(-127, 128, (h, length, dh), generator=g, dtype=torch.int8).to(device)
    qs, ks = qs * 0.03, ks * 0.03
    out = attention_fp8(q, qs, k, ks, v, vs, bias, bn, torch.float32, block_m=16, num_warps=4, num_stages=1)
    ref = attention_fp8_ref(q, qs, k, ks, v, vs, bias, bn, torch.float32)
    assert _rel(out, ref) < (0.03 if pv_fp8 else 1e-3)
