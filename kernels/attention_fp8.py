"""Attention on FP8 tensor cores: e4m3 queries, keys and (optionally) values with float32 scales.

In the manner of SageAttention: Q @ K^T runs on e4m3 (or int8) operands, each query row (token, head)
with its own scale and each block of ``BLOCK_N`` keys with one scale, so the logits are the
fp32 dot times ``q_scale[row] * k_scale[block]``. The online softmax stays in fp32 (exp2). With
e4m3 values, P @ V runs in e4m3 too: P (at most 1 after the running max is subtracted) is
stored times 256 (a power of two, so exact to undo; it keeps small probabilities out of e4m3's
subnormals) and V carries one scale per (head, channel), applied to the output. With bf16 or
fp16 values P @ V runs in that dtype.

Hopper's FP8 tensor cores want both operands of a product contiguous along the contracted axis,
so FP8 values are stored transposed: (H, Dh, L), tokens contiguous.

Keys (and values) are padded to a whole number of ``BLOCK_N`` blocks by the caller; ``bias``
(0 or -inf per key) masks padding and invalid slots.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .dispatch import interpreting
from .quantize_rows import _round_e4m3

P_SCALE = 256.0  # P in (0, 1] is stored as P * 256 in e4m3 (max 448)


@triton.jit
def _attention_fp8_kernel(
    q_ptr,  # reads q (H, Lq, DH) e4m3 (or int8, bf16, fp16; k alike) at h * sq_h + l * sq_l + d
    qs_ptr,  # reads q_scale (H, Lq) float32 at h * sqs_h + l * sqs_l
    k_ptr,  # reads k (H, L, DH), contiguous, L a multiple of BLOCK_N
    ks_ptr,  # reads k_scale (H, L // BLOCK_N) float32, contiguous
    v_ptr,  # reads v: (H, DH, L) e4m3 when PV_FP8, else (H, L, DH); contiguous
    vs_ptr,  # reads v_scale (H, DH) float32 when PV_FP8
    bias_ptr,  # reads bias (L,) float32: 0 for a key attended, -inf for one masked
    out_ptr,  # writes out (H, Lq, DH) at h * so_h + l * so_l + d
    Lq,
    L,
    sq_h, sq_l, sqs_h, sqs_l, so_h, so_l,
    qk_scale,  # softmax scale times log2(e), so exp2 can be used
    DH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PV_FP8: tl.constexpr,
    ROUND: tl.constexpr,  # interpreter: round P onto the e4m3 grid before the cast (its cast truncates)
):
    h = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, DH)
    rmask = rows < Lq
    q = tl.load(q_ptr + h * sq_h + rows[:, None].to(tl.int64) * sq_l + cols[None, :], mask=rmask[:, None], other=0.0)
    qs = tl.load(qs_ptr + h * sqs_h + rows.to(tl.int64) * sqs_l, mask=rmask, other=0.0) * qk_scale
    m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # finite start: fully masked blocks give p = 0, not NaN
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DH), tl.float32)
    k_base = k_ptr + h * L * DH
    v_base = v_ptr + h * L * DH
    ks_base = ks_ptr + h * (L // BLOCK_N)
    for n0 in range(0, L, BLOCK_N):
        kn = n0 + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + kn[:, None] * DH + cols[None, :])
        ks = tl.load(ks_base + n0 // BLOCK_N)
        bias = tl.load(bias_ptr + kn)
        s = tl.dot(q, tl.trans(k)) * (qs * ks)[:, None] + bias[None, :]
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if PV_FP8:
            vt = tl.load(v_base + cols[:, None] * L + kn[None, :])  # (DH, BLOCK_N), tokens contiguous
            p8 = p * 256.0  # P_SCALE
            if ROUND:
                p8 = _round_e4m3(p8)
            pv = tl.dot(p8.to(tl.float8e4nv), tl.trans(vt))
        else:
            v = tl.load(v_base + kn[:, None] * DH + cols[None, :])
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    if PV_FP8:
        out = out * (tl.load(vs_ptr + h * DH + cols) * (1.0 / 256.0))[None, :]
    out_off = h * so_h + rows[:, None].to(tl.int64) * so_l + cols[None, :]
    tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=rmask[:, None])


def _check(q, q_scale, k, k_scale, v, v_scale, bias, block_n):
    h, lq, dh = q.shape
    length = k.shape[1]
    pv_fp8 = v.dtype == torch.float8_e4m3fn
    if dh < 32 or block_n < 32:  # the GPU's e4m3 products contract at least 32 values
        raise ValueError(f"head_dim ({dh}) and block_n ({block_n}) must be at least 32")
    if length % block_n:
        raise ValueError(f"keys ({length}) must be padded to a multiple of block_n ({block_n})")
    if k_scale.shape != (h, length // block_n):
        raise ValueError(f"k_scale must be (H, L // block_n) = {(h, length // block_n)}, got {tuple(k_scale.shape)}")
    if q_scale.shape != (h, lq) or bias.shape != (length,):
        raise ValueError("q_scale must be (H, Lq) and bias (L,)")
    if pv_fp8 and (v.shape != (h, dh, length) or v_scale is None or v_scale.shape != (h, dh)):
        raise ValueError("e4m3 values must be stored transposed, (H, Dh, L), with v_scale (H, Dh)")
    if not pv_fp8 and v.shape != (h, length, dh):
        raise ValueError("values must be (H, L, Dh)")
    return pv_fp8


def attention_fp8(
    q: torch.Tensor,
    q_scale: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
    v_scale: torch.Tensor | None,
    bias: torch.Tensor,
    block_n: int,
    out_dtype: torch.dtype,
    block_m: int = 128,
    num_warps: int = 8,
    num_stages: int = 3,
) -> torch.Tensor:
    """softmax(dequant(q) @ dequant(k)^T / sqrt(Dh) + bias) @ dequant(v).

    q: (H, Lq, Dh) e4m3 (or int8; k the same dtype), any strides with a unit one along Dh;
    q_scale: (H, Lq) float32, any strides;
    k: (H, L, Dh) e4m3, contiguous, L a multiple of ``block_n``; k_scale: (H, L // block_n) float32,
    one scale per block of ``block_n`` keys; v: (H, Dh, L) e4m3 with v_scale (H, Dh), or (H, L, Dh)
    bf16/fp16 with v_scale None; bias: (L,) float32, 0 or -inf. ``block_m``, ``num_warps``,
    ``num_stages``: the launch (any valid choice computes the same function).
    Returns (H, Lq, Dh) in ``out_dtype`` whose memory is token-major, (Lq, H, Dh).
    """
    pv_fp8 = _check(q, q_scale, k, k_scale, v, v_scale, bias, block_n)
    h, lq, dh = q.shape
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty((lq, h, dh), device=q.device, dtype=out_dtype).transpose(0, 1)
    grid = (triton.cdiv(lq, block_m), h)
    _attention_fp8_kernel[grid](
        q, q_scale, k.contiguous(), k_scale.contiguous(), v.contiguous(),
        v_scale if pv_fp8 else q_scale, bias, out, lq, k.shape[1],
        q.stride(0), q.stride(1), q_scale.stride(0), q_scale.stride(1), out.stride(0), out.stride(1),
        (1.0 / math.sqrt(dh)) * 1.4426950408889634,
        DH=dh, BLOCK_M=block_m, BLOCK_N=block_n, PV_FP8=pv_fp8, ROUND=interpreting(),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def attention_fp8_ref(
    q: torch.Tensor,
    q_scale: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor,
    v: torch.Tensor,
    v_scale: torch.Tensor | None,
    bias: torch.Tensor,
    block_n: int,
    out_dtype: torch.dtype,
    block_m: int = 128,
    num_warps: int = 8,
    num_stages: int = 3,
) -> torch.Tensor:
    """The torch reference: the operands dequantized to float32 and attention in float32 (P not
    quantized: the kernel's P in e4m3 is its one further rounding)."""
    pv_fp8 = _check(q, q_scale, k, k_scale, v, v_scale, bias, block_n)
    qf = q.float() * q_scale[..., None]
    kf = (k.float().unflatten(1, (-1, block_n)) * k_scale[..., None, None]).flatten(1, 2)
    vf = (v.float() * v_scale[..., None]).transpose(1, 2) if pv_fp8 else v.float()
    logits = qf @ kf.transpose(1, 2) / math.sqrt(q.shape[-1]) + bias
    return (torch.softmax(logits, dim=-1) @ vf).to(out_dtype)
