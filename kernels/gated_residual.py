"""Gated residual epilogue: ``x + gate * y`` with a per-frame gate, one read of x and y."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._rows import frame_rows, row_block


@triton.jit
def _gated_residual_kernel(
    x_ptr,  # reads the residual stream x (M, D), contiguous
    y_ptr,  # reads the branch output y (M, D), contiguous
    gate_ptr,  # reads gate of row r's frame (b, t) at b * gate_sb + t * gate_st
    out_ptr,  # writes out (M, D), contiguous (may alias x)
    M,
    D,
    N,
    T,
    gate_sb,
    gate_st,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < D)[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    frame = rows // N
    g_offs = ((frame // T) * gate_sb + (frame % T) * gate_st)[:, None] + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + g_offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x + g * y).to(out_ptr.dtype.element_ty), mask=mask)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x, y: (B, T, N, D); gate: (B, T, 1, D). Returns ``x + gate * y``, (B, T, N, D)."""
    b, t, n, d = x.shape
    x, y = x.contiguous(), y.contiguous()
    gate, g_b, g_t = frame_rows(gate, x)
    out = torch.empty_like(x)
    m = b * t * n
    block_d = triton.next_power_of_2(d)
    block_m = row_block(block_d)
    _gated_residual_kernel[(triton.cdiv(m, block_m),)](
        x, y, gate, out, m, d, n, t, g_b, g_t, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4
    )
    return out


def gated_residual_ref(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The torch reference (model/ops.py's math)."""
    return torch.addcmul(x, y, gate)
