"""LayerNorm (no affine) fused with adaLN modulation: ``norm(x) * (1 + scale) + shift``.

One pass over x: each program normalises ``BLOCK_M`` rows in fp32 registers and applies its
frame's shift/scale before the single store, where torch makes three passes (norm, 1 + scale,
addcmul) and two intermediates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._rows import frame_rows, row_block


@triton.jit
def _layer_norm_modulate_kernel(
    x_ptr,  # reads x as (M, D) rows, row stride stride_x, unit column stride
    shift_ptr,  # reads shift of row r's frame (b, t) at b * shift_sb + t * shift_st
    scale_ptr,  # reads scale, laid out like shift
    out_ptr,  # writes out (M, D), contiguous
    M,
    D,
    N,
    T,
    stride_x,
    shift_sb,
    shift_st,
    scale_sb,
    scale_st,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < M
    mask = rmask[:, None] & (cols < D)[None, :]
    x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    frame = rows // N
    b = frame // T
    t = frame % T
    sh = tl.load(shift_ptr + (b * shift_sb + t * shift_st)[:, None] + cols[None, :], mask=mask, other=0.0)
    sc = tl.load(scale_ptr + (b * scale_sb + t * scale_st)[:, None] + cols[None, :], mask=mask, other=0.0)
    y = xc * rstd[:, None] * (1.0 + sc.to(tl.float32)) + sh.to(tl.float32)
    tl.store(out_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """x: (B, T, N, D); shift, scale: (B, T, 1, D) (may be strided views). Returns (B, T, N, D)."""
    b, t, n, d = x.shape
    if x.stride(-1) != 1 or x.stride(2) != d or x.stride(1) != n * d or x.stride(0) != t * n * d:
        x = x.contiguous()
    shift, sh_b, sh_t = frame_rows(shift, x)
    scale, sc_b, sc_t = frame_rows(scale, x)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    m = b * t * n
    block_d = triton.next_power_of_2(d)
    block_m = row_block(block_d)
    _layer_norm_modulate_kernel[(triton.cdiv(m, block_m),)](
        x, shift, scale, out, m, d, n, t, d, sh_b, sh_t, sc_b, sc_t, eps,
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4 if block_d <= 1024 else 8,
    )
    return out


def layer_norm_modulate_ref(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """The torch reference (model/ops.py's math)."""
    x = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return torch.addcmul(shift, x, 1 + scale)
