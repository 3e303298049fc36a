"""Attention of a chunk's queries over one session's KV ring: [sink | window | current].

Reads keys and values straight from the ring layout (slot-major, ``slots * N`` rows per head)
with no gather or copy. Each slot's learned frame-index offset ``e = frame_emb[frame_idx[s], h]``
enters as ``q . (k + e) = q . k + q . e``: one (BLOCK_M,) dot per slot instead of rewriting the
keys. Invalid slots (not yet filled, or evicted) are masked by ``token_valid``. Online softmax
(flash attention) in fp32 with exp2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .ring import RingView


@triton.jit
def _ring_attention_kernel(
    q_ptr,  # reads q (B, H, Lq, DH) at b * sq_b + h * sq_h + l * sq_l + d (any strides, unit along DH)
    k_ptr,  # reads the ring's keys (H, S * N, DH), contiguous
    v_ptr,  # reads the ring's values (H, S * N, DH), contiguous
    fidx_ptr,  # reads frame_idx (S,) long
    valid_ptr,  # reads token_valid (S, N) as uint8
    emb_ptr,  # reads frame_emb (P, H, DH), contiguous
    out_ptr,  # writes out (B, H, Lq, DH) at b * so_b + h * so_h + l * so_l + d (token-major from launch)
    lane_ptr,  # reads the lane of each batch row (B,) long when LANES
    H,
    Lq,
    S,
    N,
    lane_stride,  # elements between two lanes' k (and v) blocks; the blocks of fidx, valid are S, S * N
    sq_b, sq_h, sq_l,
    so_b, so_h, so_l,
    qk_scale,  # softmax scale times log2(e), so exp2 can be used
    DH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr,  # fp32 inputs: exact fp32 dots (the default would round them to tf32)
    LANES: tl.constexpr,  # a batch of lanes of one pool (program axis 2 is the batch row)
):
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # the batch row of q and out
    if LANES:
        lane = tl.load(lane_ptr + tl.program_id(2))
        k_ptr += lane * lane_stride
        v_ptr += lane * lane_stride
        fidx_ptr += lane * S
        valid_ptr += lane * S * N
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, DH)
    rmask = rows < Lq
    q_off = b * sq_b + h * sq_h + rows[:, None].to(tl.int64) * sq_l + cols[None, :]
    q = tl.load(q_ptr + q_off, mask=rmask[:, None], other=0.0)
    qf = q.to(tl.float32)
    m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # finite start: fully masked blocks give p = 0, not NaN
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DH), tl.float32)
    kv_base = h.to(tl.int64) * S * N
    for s in range(0, S):
        fi = tl.load(fidx_ptr + s)
        e = tl.load(emb_ptr + (fi * H + h) * DH + cols).to(tl.float32)
        qe = tl.sum(qf * e[None, :], axis=1)  # q . e for every query of this slot's keys
        for n0 in range(0, N, BLOCK_N):
            kn = n0 + tl.arange(0, BLOCK_N)
            kmask = kn < N
            valid = tl.load(valid_ptr + s * N + kn, mask=kmask, other=0) != 0
            krow = kv_base + s * N + kn
            k = tl.load(k_ptr + krow[:, None] * DH + cols[None, :], mask=kmask[:, None], other=0.0)
            if IEEE:
                qk = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                qk = tl.dot(q, tl.trans(k))
            scores = (qk + qe[:, None]) * qk_scale
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(scores - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + krow[:, None] * DH + cols[None, :], mask=kmask[:, None], other=0.0)
            if IEEE:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    out_off = b * so_b + h * so_h + rows[:, None].to(tl.int64) * so_l + cols[None, :]
    tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=rmask[:, None])


def launch(q: torch.Tensor, ring, lanes: torch.Tensor | None, lane_stride: int) -> torch.Tensor:
    """Shared by ``ring_attention`` and ``lane_ring_attention``: q (B, H, Lq, Dh), read through its
    strides (token-major, as ``qk_norm_rope`` makes it, or contiguous; a unit stride along Dh);
    with ``lanes`` the ring's tensors carry a leading lane axis.

    Returns (B, H, Lq, Dh) whose memory is token-major, (B, Lq, H, Dh): its ``transpose(1, 2)``
    is contiguous, so the output projection's reshape after attention is a view."""
    b, h, lq, dh = q.shape
    slots, n = ring.token_valid.shape[-2:]
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty((b, lq, h, dh), device=q.device, dtype=q.dtype).transpose(1, 2)
    # Small problems leave most SMs idle at 64 query rows per program: take 16-row tiles there.
    # Warps per tile size chosen so that sm_90 SASS keeps everything in registers (no LDL/STL):
    # 16 rows on 2 warps, 32 on 4, 64 (wgmma) on 8. fp32 (exact dots, tests) stays at 16 rows.
    exact = q.dtype == torch.float32
    if exact:
        block_m, warps = 16, 4
    elif triton.cdiv(lq, 64) * h * b >= 128:
        block_m, warps = 64, 8
    elif triton.cdiv(lq, 32) * h * b >= 64:
        block_m, warps = 32, 4
    else:
        block_m, warps = 16, 2
    block_n = 64 if n >= 64 else max(16, triton.next_power_of_2(n))
    grid = (triton.cdiv(lq, block_m), h, b)
    _ring_attention_kernel[grid](
        q, ring.k, ring.v, ring.frame_idx, ring.token_valid.view(torch.uint8), ring.frame_emb.contiguous(), out,
        q if lanes is None else lanes, h, lq, slots, n, lane_stride,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        (1.0 / math.sqrt(dh)) * 1.4426950408889634,
        DH=dh, BLOCK_M=block_m, BLOCK_N=block_n, IEEE=exact, LANES=lanes is not None, num_warps=warps,
        num_stages=2,
    )
    return out


def ring_attention(q: torch.Tensor, ring: RingView) -> torch.Tensor:
    """q: (H, Lq, Dh) the chunk's queries (already normalised and rotated), any strides. Returns
    (H, Lq, Dh) whose memory is token-major, (Lq, H, Dh): the [0] of ``launch``'s (1, H, Lq, Dh)."""
    if not (ring.k.is_contiguous() and ring.v.is_contiguous()):
        raise ValueError("the ring's k and v must be contiguous (H, slots * N, Dh) views")
    return launch(q[None], ring, None, 0)[0]


def ring_attention_ref(q: torch.Tensor, ring: RingView) -> torch.Tensor:
    """The torch reference: offset keys materialised, then SDPA under the validity mask."""
    slots, n = ring.token_valid.shape
    k = ring.k.unflatten(1, (slots, n)) + ring.frame_emb[ring.frame_idx].transpose(0, 1)[:, :, None, :]
    return F.scaled_dot_product_attention(
        q[None], k.flatten(1, 2)[None], ring.v[None], attn_mask=ring.token_valid.view(1, 1, 1, -1)
    )[0]
