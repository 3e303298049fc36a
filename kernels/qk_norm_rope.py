"""QK-norm (RMSNorm per head) + 2D RoPE, with the chunk's keys and values written into the ring.

The attention input in one pass: each program reads a block of tokens of one head of q, k, v
straight from the QKV projection's strided views, RMS-normalises q and k in fp32, rotates them by
their token's RoPE angles and stores q in token-major memory ((B, L, H, Dh), the layout the
attention output keeps for the output projection); k and v go either to fresh tensors (k
token-major too) or, in a stream step, into the session's KV ring at the chunk's slots. The
slots are a device tensor (``RingSlots.slot``), so the write needs no host sync and replays
unchanged in a CUDA graph while the ring turns.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .ring import LaneSlots, RingSlots


@triton.jit
def _qk_norm_rope_kernel(
    q_ptr,  # reads q (B, H, L, DH) at b * sq_b + h * sq_h + l * sq_l + d
    k_ptr,  # reads k, strides sk_*
    v_ptr,  # reads v, strides sv_* (only when WRITE_RING)
    qw_ptr,  # reads the q RMSNorm weight (DH,)
    kw_ptr,  # reads the k RMSNorm weight (DH,)
    cos_ptr,  # reads cos (N, DH // 2), contiguous
    sin_ptr,  # reads sin (N, DH // 2), contiguous
    q_out_ptr,  # writes q (B, H, L, DH) at b * so_b + h * so_h + l * so_l + d
    k_out_ptr,  # writes k (B, H, L, DH), strides so_* (as q), or the ring's k (H, slots * N, DH) when WRITE_RING
    v_out_ptr,  # writes the ring's v (H, slots * N, DH) when WRITE_RING (unused otherwise)
    slot_ptr,  # reads the chunk's slots (F,) long when WRITE_RING, (B, F) when LANES
    lane_ptr,  # reads each batch row's lane (B,) long when LANES
    H,
    L,
    N,
    ring_rows,
    lane_stride,  # elements between two lanes' rings (LANES)
    sq_b, sq_h, sq_l,
    sk_b, sk_h, sk_l,
    sv_b, sv_h, sv_l,
    so_b, so_h, so_l,
    eps,
    DH: tl.constexpr,
    BLOCK_L: tl.constexpr,
    WRITE_RING: tl.constexpr,
    LANES: tl.constexpr,  # WRITE_RING into lane ``lanes[b]`` of a pool, at that row's slots
):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    rows = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cols = tl.arange(0, DH)
    rmask = rows < L
    mask = rmask[:, None]
    n = rows % N
    half = tl.arange(0, DH // 2)
    cos = tl.load(cos_ptr + n[:, None] * (DH // 2) + half[None, :], mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + n[:, None] * (DH // 2) + half[None, :], mask=mask, other=0.0).to(tl.float32)
    # Pairs are interleaved: (x[2j], x[2j + 1]) rotates by angle j. Load whole rows (wide, coalesced)
    # and split the pairs in registers.
    qw_e, qw_o = tl.split(tl.reshape(tl.load(qw_ptr + cols).to(tl.float32), (DH // 2, 2)))
    kw_e, kw_o = tl.split(tl.reshape(tl.load(kw_ptr + cols).to(tl.float32), (DH // 2, 2)))

    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_l + cols[None, :], mask=mask, other=0.0)
    q = q.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(q * q, axis=1) / DH + eps)
    e, o = tl.split(tl.reshape(q, (BLOCK_L, DH // 2, 2)))
    e = e * rstd[:, None] * qw_e[None, :]
    o = o * rstd[:, None] * qw_o[None, :]
    q = tl.reshape(tl.join(e * cos - o * sin, e * sin + o * cos), (BLOCK_L, DH))
    out = b.to(tl.int64) * so_b + h.to(tl.int64) * so_h + rows[:, None].to(tl.int64) * so_l + cols[None, :]
    tl.store(q_out_ptr + out, q.to(q_out_ptr.dtype.element_ty), mask=mask)

    k = tl.load(k_ptr + b * sk_b + h * sk_h + rows[:, None] * sk_l + cols[None, :], mask=mask, other=0.0)
    k = k.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(k * k, axis=1) / DH + eps)
    e, o = tl.split(tl.reshape(k, (BLOCK_L, DH // 2, 2)))
    e = e * rstd[:, None] * kw_e[None, :]
    o = o * rstd[:, None] * kw_o[None, :]
    k = tl.reshape(tl.join(e * cos - o * sin, e * sin + o * cos), (BLOCK_L, DH))
    if WRITE_RING:
        if LANES:
            lane = tl.load(lane_ptr + b)
            k_out_ptr += lane * lane_stride
            v_out_ptr += lane * lane_stride
            slot = tl.load(slot_ptr + b * (L // N) + rows // N, mask=rmask, other=0)
        else:
            slot = tl.load(slot_ptr + rows // N, mask=rmask, other=0)
        dest = h.to(tl.int64) * ring_rows + slot * N + n
        tl.store(k_out_ptr + dest[:, None] * DH + cols[None, :], k.to(k_out_ptr.dtype.element_ty), mask=mask)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + rows[:, None] * sv_l + cols[None, :], mask=mask, other=0.0)
        tl.store(v_out_ptr + dest[:, None] * DH + cols[None, :], v.to(v_out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(k_out_ptr + out, k.to(k_out_ptr.dtype.element_ty), mask=mask)


def _launch(q, k, v, q_weight, k_weight, cos, sin, eps, q_out, k_out, v_out, slot, ring_rows, n,
            lanes=None, lane_stride=0) -> None:
    b, h, length, dh = q.shape
    # Frames are small (144-576 tokens): short row blocks give the GPU enough programs (~2 per SM).
    # At most 32 rows: at 64 rows of Dh = 64 the pair split/join spills to local memory (sm_90 SASS).
    block_l = max(16, min(32, triton.next_power_of_2(triton.cdiv(b * h * length, 264)), 2048 // dh))
    for t in (q, k, v, q_out):
        if t.stride(-1) != 1:
            raise ValueError("q, k, v and the output need a unit stride along head_dim")
    grid = (b * h, triton.cdiv(length, block_l))
    _qk_norm_rope_kernel[grid](
        q, k, v, q_weight, k_weight, cos, sin, q_out, k_out, v_out, slot, q if lanes is None else lanes,
        h, length, n, ring_rows, lane_stride,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2),
        eps, DH=dh, BLOCK_L=block_l, WRITE_RING=slot is not None, LANES=lanes is not None, num_warps=4,
    )


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    ring: Sequence[RingSlots] | LaneSlots | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k, v: (B, H, T * N, Dh) (strided views are read in place); q_weight, k_weight: (Dh,);
    cos, sin: (N, Dh // 2). Returns (q, k), each (B, H, T * N, Dh), normalised and rotated.

    The returned q and k are (B, H, L, Dh) views whose memory is token-major, (B, L, H, Dh): their
    ``transpose(1, 2)`` is contiguous. Attention reads q through its strides and writes its output
    token-major too, so the output projection's ``transpose(1, 2).reshape`` is a view, not a copy.

    With ``ring`` (one ``RingSlots`` per batch row, or the ``LaneSlots`` of a pool), k and v are
    written into the rings at the chunk's slots instead, and the returned k is None.
    """
    b, h, length, dh = q.shape
    n = cos.shape[0]
    if length % n:
        raise ValueError(f"{length} tokens is not a whole number of {n}-token frames")
    cos, sin = cos.contiguous(), sin.contiguous()
    q_out = torch.empty((b, length, h, dh), device=q.device, dtype=q.dtype).transpose(1, 2)
    if ring is None:  # k_out has q_out's strides: the kernel writes both through them
        k_out = torch.empty((b, length, h, dh), device=q.device, dtype=q.dtype).transpose(1, 2)
        _launch(q, k, v, q_weight, k_weight, cos, sin, eps, q_out, k_out, k_out, None, 0, n)
        return q_out, k_out
    if isinstance(ring, LaneSlots):  # one launch for the whole batch, each row into its lane
        lanes, hh, rows, dh_ = ring.k.shape
        if ring.k.stride() != ring.v.stride() or ring.k.stride()[1:] != (rows * dh_, dh_, 1):
            raise ValueError("each lane's k and v must be a contiguous (H, slots * N, Dh) block, with equal strides")
        if ring.slots.shape != (b, length // n) or len(ring.lanes) != b:
            raise ValueError(f"lane slots {tuple(ring.slots.shape)} do not fit a batch of {b} chunks of {length // n}")
        _launch(q, k, v, q_weight, k_weight, cos, sin, eps, q_out, ring.k, ring.v, ring.slots.contiguous(), rows, n,
                ring.lanes, ring.k.stride(0))
        return q_out, None
    if len(ring) != b:
        raise ValueError(f"{len(ring)} rings for a batch of {b}")
    # Sessions own separate caches, so each batch row is one launch into its own ring.
    for i, r in enumerate(ring):
        if not (r.k.is_contiguous() and r.v.is_contiguous()):
            raise ValueError("the ring's k and v must be contiguous (H, slots * N, Dh) views")
        _launch(
            q[i : i + 1], k[i : i + 1], v[i : i + 1], q_weight, k_weight, cos, sin, eps,
            q_out[i : i + 1], r.k, r.v, r.slot, r.k.shape[1], n,
        )
    return q_out, None


def qk_norm_rope_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    ring: Sequence[RingSlots] | LaneSlots | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch reference: RMSNorm, RoPE per frame, then an ``index_copy_`` into each ring
    (``LaneSlots.write`` for a pool's lanes)."""
    b, h, length, dh = q.shape
    n = cos.shape[0]

    def norm_rope(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(x, (dh,), w, eps).unflatten(2, (length // n, n))
        x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
        x = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        return x.flatten(2, 3)

    q, k = norm_rope(q, q_weight), norm_rope(k, k_weight)
    if ring is None:
        return q, k
    if isinstance(ring, LaneSlots):
        ring.write(k, v)
        return q, None
    for i, r in enumerate(ring):
        frames = length // n
        r.k.unflatten(1, (-1, n)).index_copy_(1, r.slot, k[i].unflatten(1, (frames, n)).to(r.k.dtype))
        r.v.unflatten(1, (-1, n)).index_copy_(1, r.slot, v[i].unflatten(1, (frames, n)).to(r.v.dtype))
    return q, None
