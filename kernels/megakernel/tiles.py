"""The mega-kernel's tile bodies: ``@triton.jit`` helpers inlined into the persistent program.

Each computes one instruction's tile (see ``program.Op``) in fp32 registers and stores it in
its buffer's dtype; ``interpreter.Interpreter`` has the torch twin of each. Simple and correct
first: one ``tl.dot`` matmul tile (optionally normalising its input rows), row-wise norms, an
online-softmax attention tile.
"""
from __future__ import annotations

import triton
import triton.language as tl

EPI_NONE, EPI_GELU, EPI_GATED, EPI_RESIDUAL = 0, 1, 2, 3


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def mm_tile(
    a_ptr,  # reads A (rows, K), row-major; with NORM, x (rows, D = K), normalised on the fly
    w_ptr,  # reads W (cols, K), row-major (an nn.Linear weight)
    bias_ptr,  # reads the bias (cols,)
    out_ptr,  # writes out (rows, cols); EPI_GATED / EPI_RESIDUAL also read it (the residual)
    gate_ptr,  # reads the gate (T, cols) for EPI_GATED: row r uses frame r // n_tok
    ac_ptr,  # reads the norm's (2, T, K) table with NORM: a at [0, frame], c at [1, frame]
    rows, cols, K, r0, c0, n_tok, T, eps,
    EPI: tl.constexpr, NORM: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    IEEE: tl.constexpr,
):
    """out[r0:r0+BM, c0:c0+BN] = epilogue(A @ W^T + bias); with NORM, A = LayerNorm(x) * a[frame] +
    c[frame] (no affine inside the norm), rounded to x's dtype as an LN tile would store it."""
    rm = r0 + tl.arange(0, BM)
    rn = c0 + tl.arange(0, BN)
    rmask = rm < rows
    frame = rm // n_tok
    mean = tl.zeros((BM,), tl.float32)
    rstd = tl.zeros((BM,), tl.float32)
    if NORM:
        # Row statistics in one pass over K-chunks (so any width works): each chunk's mean and
        # centred sum of squares, merged into the running ones (Chan et al.); k0 columns seen so far.
        m2 = tl.zeros((BM,), tl.float32)
        for k0 in range(0, K, BK):
            rk = k0 + tl.arange(0, BK)
            kmask = rk < K
            xa = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=rmask[:, None] & kmask[None, :],
                         other=0.0).to(tl.float32)
            nb = tl.sum(kmask.to(tl.float32), axis=0)
            mb = tl.sum(xa, axis=1) / nb
            xc = tl.where(kmask[None, :], xa - mb[:, None], 0.0)
            seen = k0 * 1.0
            delta = mb - mean
            mean += delta * (nb / (seen + nb))
            m2 += tl.sum(xc * xc, axis=1) + delta * delta * (seen * nb / (seen + nb))
        rstd = 1.0 / tl.sqrt(m2 / K + eps)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        amask = rmask[:, None] & (rk[None, :] < K)
        a = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=amask, other=0.0)
        if NORM:  # masked columns: a = c = 0, so they stay 0
            sa = tl.load(ac_ptr + frame[:, None] * K + rk[None, :], mask=amask, other=0.0).to(tl.float32)
            sc = tl.load(ac_ptr + (T + frame)[:, None] * K + rk[None, :], mask=amask, other=0.0).to(tl.float32)
            y = (a.to(tl.float32) - mean[:, None]) * rstd[:, None] * sa + sc
            a = y.to(a_ptr.dtype.element_ty)
        w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=(rn[:, None] < cols) & (rk[None, :] < K), other=0.0)
        acc += _dot(a, tl.trans(w), IEEE)
    acc += tl.load(bias_ptr + rn, mask=rn < cols, other=0.0).to(tl.float32)[None, :]
    mask = rmask[:, None] & (rn[None, :] < cols)
    out_offs = rm[:, None] * cols + rn[None, :]
    if EPI == 1:
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)  # tanh-GELU, as kernels/gelu.py
        u = tl.minimum(tl.maximum(u, -15.0), 15.0)
        acc = 0.5 * acc * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))
    if EPI == 2:
        gate = tl.load(gate_ptr + frame[:, None] * cols + rn[None, :], mask=mask, other=0.0)
        acc = tl.load(out_ptr + out_offs, mask=mask, other=0.0).to(tl.float32) + gate.to(tl.float32) * acc
    if EPI == 3:
        acc = tl.load(out_ptr + out_offs, mask=mask, other=0.0).to(tl.float32) + acc
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def ln_tile(
    x_ptr,  # reads x (M, D)
    h_ptr,  # writes h (M, D)
    ac_ptr,  # reads this norm's (2, T, D) table: a at [0, frame], c at [1, frame]
    r0, M, T, n_tok, eps,
    D: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr, SUB: tl.constexpr,
):
    """h = LayerNorm(x) * a[frame] + c[frame] for rows r0..r0+BM (no affine inside the norm),
    SUB rows at a time so a wide row block stays in registers."""
    cd = tl.arange(0, BD)
    for sub in range(0, BM, SUB):
        rm = r0 + sub + tl.arange(0, SUB)
        mask = (rm[:, None] < M) & (cd[None, :] < D)
        x = tl.load(x_ptr + rm[:, None] * D + cd[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / D
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
        frame = rm // n_tok
        a = tl.load(ac_ptr + frame[:, None] * D + cd[None, :], mask=mask, other=0.0).to(tl.float32)
        c = tl.load(ac_ptr + (T + frame)[:, None] * D + cd[None, :], mask=mask, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * a + c
        tl.store(h_ptr + rm[:, None] * D + cd[None, :], y.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _norm_rope(base_ptr, w_ptr, rm, cd, rmask, cos, sin, eps, ROW: tl.constexpr, DH: tl.constexpr):
    """RMSNorm (weight w) then interleaved-pair RoPE of a (BM, DH) head slice at base_ptr, rows ROW apart."""
    swap = cd ^ 1  # the pair partner of each feature
    x = tl.load(base_ptr + rm[:, None] * ROW + cd[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    xs = tl.load(base_ptr + rm[:, None] * ROW + swap[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / DH + eps)
    x = x * rstd[:, None] * tl.load(w_ptr + cd).to(tl.float32)[None, :]
    xs = xs * rstd[:, None] * tl.load(w_ptr + swap).to(tl.float32)[None, :]
    sign = tl.where(cd % 2 == 0, -1.0, 1.0)  # even: e cos - o sin; odd: o cos + e sin
    return x * cos + sign[None, :] * xs * sin


@triton.jit
def qk_rope_tile(
    qkv_ptr,  # reads qkv (M, 3D); D here is the attention width A
    qw_ptr,  # reads this layer's q RMSNorm weight (DH,)
    kw_ptr,  # reads this layer's k RMSNorm weight (DH,)
    cos_ptr,  # reads cos (N, DH / 2)
    sin_ptr,  # reads sin (N, DH / 2)
    slot_ptr,  # reads the chunk's cache slot per frame (T,) long
    q_ptr,  # writes q (H, M, DH)
    rk_ptr,  # writes this layer's ring keys (H, S * N, DH) at the chunk's slots
    rv_ptr,  # writes this layer's ring values (H, S * N, DH) at the chunk's slots
    head, r0, M, n_tok, S, eps,
    D: tl.constexpr, DH: tl.constexpr, BM: tl.constexpr,
):
    """QK-norm + 2D RoPE of one head for rows r0..r0+BM; k and v go into the KV ring."""
    rm = r0 + tl.arange(0, BM)
    cd = tl.arange(0, DH)
    rmask = rm < M
    n = rm % n_tok
    cos = tl.load(cos_ptr + n[:, None] * (DH // 2) + (cd // 2)[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + n[:, None] * (DH // 2) + (cd // 2)[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    base = qkv_ptr + head * DH
    q = _norm_rope(base, qw_ptr, rm, cd, rmask, cos, sin, eps, 3 * D, DH)
    k = _norm_rope(base + D, kw_ptr, rm, cd, rmask, cos, sin, eps, 3 * D, DH)
    v = tl.load(base + 2 * D + rm[:, None] * (3 * D) + cd[None, :], mask=rmask[:, None], other=0.0)
    tl.store(q_ptr + (head * M + rm)[:, None] * DH + cd[None, :], q.to(q_ptr.dtype.element_ty), mask=rmask[:, None])
    slot = tl.load(slot_ptr + rm // n_tok, mask=rmask, other=0)
    dest = (head.to(tl.int64) * S + slot) * n_tok + n
    tl.store(rk_ptr + dest[:, None] * DH + cd[None, :], k.to(rk_ptr.dtype.element_ty), mask=rmask[:, None])
    tl.store(rv_ptr + dest[:, None] * DH + cd[None, :], v.to(rv_ptr.dtype.element_ty), mask=rmask[:, None])


@triton.jit
def attn_part_tile(
    q_ptr,  # reads q (H, M, DH)
    rk_ptr,  # reads this layer's ring keys (H, S * N, DH)
    rv_ptr,  # reads this layer's ring values (H, S * N, DH)
    fidx_ptr,  # reads frame_idx (S,) long
    valid_ptr,  # reads token_valid (S, N) uint8
    emb_ptr,  # reads this layer's frame_emb (P, H, DH)
    acc_ptr,  # writes part_acc (S, H, M, DH) fp32
    ml_ptr,  # writes part_ml (2, S, H, M) fp32: running max, then sum of exponentials
    head, slot, r0, M, H, S, n_tok, sm_scale,
    DH: tl.constexpr, BM: tl.constexpr, BKV: tl.constexpr, IEEE: tl.constexpr,
):
    """Online-softmax partial of one head's query rows over one cache slot's keys (unnormalised)."""
    rm = r0 + tl.arange(0, BM)
    cd = tl.arange(0, DH)
    rmask = rm < M
    q = tl.load(q_ptr + (head * M + rm)[:, None] * DH + cd[None, :], mask=rmask[:, None], other=0.0)
    fi = tl.load(fidx_ptr + slot)
    e = tl.load(emb_ptr + (fi * H + head) * DH + cd).to(tl.float32)
    qe = tl.sum(q.to(tl.float32) * e[None, :], axis=1)  # q . (k + e) = q . k + q . e
    m_i = tl.full((BM,), -1.0e30, tl.float32)  # finite: an empty slot gives l = 0, not NaN
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, DH), tl.float32)
    kv_row = (head.to(tl.int64) * S + slot) * n_tok
    for n0 in range(0, n_tok, BKV):
        kn = n0 + tl.arange(0, BKV)
        kmask = kn < n_tok
        valid = tl.load(valid_ptr + slot * n_tok + kn, mask=kmask, other=0) != 0
        k = tl.load(rk_ptr + (kv_row + kn)[:, None] * DH + cd[None, :], mask=kmask[:, None], other=0.0)
        scores = (_dot(q, tl.trans(k), IEEE) + qe[:, None]) * sm_scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(rv_ptr + (kv_row + kn)[:, None] * DH + cd[None, :], mask=kmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
    row = (slot * H + head).to(tl.int64) * M + rm
    tl.store(ml_ptr + row, m_i, mask=rmask)
    tl.store(ml_ptr + S * H * M + row, l_i, mask=rmask)
    tl.store(acc_ptr + row[:, None] * DH + cd[None, :], acc, mask=rmask[:, None])


@triton.jit
def attn_reduce_tile(
    acc_ptr,  # reads part_acc (S, H, M, DH) fp32
    ml_ptr,  # reads part_ml (2, S, H, M) fp32
    out_ptr,  # writes attn (M, H * DH), this head's columns
    head, r0, M, H, S,
    DH: tl.constexpr, BM: tl.constexpr,
):
    """Merge one head's S slot partials: softmax over every valid key of the cache."""
    rm = r0 + tl.arange(0, BM)
    cd = tl.arange(0, DH)
    rmask = rm < M
    mx = tl.full((BM,), -1.0e30, tl.float32)
    for s in range(0, S):
        mx = tl.maximum(mx, tl.load(ml_ptr + (s * H + head) * M + rm, mask=rmask, other=-1.0e30))
    den = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, DH), tl.float32)
    for s in range(0, S):
        row = (s * H + head).to(tl.int64) * M + rm
        w = tl.exp(tl.load(ml_ptr + row, mask=rmask, other=-1.0e30) - mx)
        den += w * tl.load(ml_ptr + S * H * M + row, mask=rmask, other=0.0)
        acc += w[:, None] * tl.load(acc_ptr + row[:, None] * DH + cd[None, :], mask=rmask[:, None], other=0.0)
    out = acc / tl.where(den > 0.0, den, 1.0)[:, None]
    tl.store(out_ptr + rm[:, None] * (H * DH) + head * DH + cd[None, :], out.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None])


@triton.jit
def cross_tile(
    cq_ptr,  # reads cross queries (M, D); D here is the attention width A
    ckv_ptr,  # reads the prompt's keys and values (LT, 2D)
    out_ptr,  # writes attn (M, D), this head's columns
    head, r0, M, LT, sm_scale,
    D: tl.constexpr, DH: tl.constexpr, BM: tl.constexpr, BLT: tl.constexpr, IEEE: tl.constexpr,
):
    """Cross-attention of one head's query rows over every prompt token (one block, no mask)."""
    rm = r0 + tl.arange(0, BM)
    cd = tl.arange(0, DH)
    tk = tl.arange(0, BLT)
    rmask, tmask = rm < M, tk < LT
    q = tl.load(cq_ptr + rm[:, None] * D + head * DH + cd[None, :], mask=rmask[:, None], other=0.0)
    k = tl.load(ckv_ptr + tk[:, None] * (2 * D) + head * DH + cd[None, :], mask=tmask[:, None], other=0.0)
    v = tl.load(ckv_ptr + tk[:, None] * (2 * D) + D + head * DH + cd[None, :], mask=tmask[:, None], other=0.0)
    scores = _dot(q, tl.trans(k), IEEE) * sm_scale
    scores = tl.where(tmask[None, :], scores, float("-inf"))
    p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
    out = _dot(p.to(v.dtype), v, IEEE) / tl.sum(p, axis=1)[:, None]
    tl.store(out_ptr + rm[:, None] * D + head * DH + cd[None, :], out.to(out_ptr.dtype.element_ty), mask=rmask[:, None])

