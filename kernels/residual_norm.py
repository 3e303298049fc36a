"""Residual add fused with the LayerNorm that follows it: ``x += gate * y`` then ``norm(x)``.

One pass: each program adds ``BLOCK_M`` rows of the branch output to the residual stream,
stores the new stream, and normalises the stored value (rounded to x's dtype, so the result is
that of the unfused add then norm in bf16 too) before applying either adaLN modulation
(``* (1 + scale) + shift``, per frame) or the LayerNorm's own weight and bias. Unfused, the
add writes x and the norm reads it back: two launches and one more full pass over x.

With ``quantize`` the normalised rows go straight to the FP8 linear that reads them: each row,
rounded to x's dtype as the unfused norm would store it, gets one float32 scale
(``amax(row) * (1 / 448)``, as ``quantize_rows``) and is stored in e4m3 (the bytes of ``quantize_rows`` on the stored h),
so h is never written in x's dtype and read back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._rows import frame_rows, row_block
from .dispatch import interpreting
from .quantize_rows import _row_scale, _to_e4m3, quantize_rows_ref


@triton.jit
def _residual_norm_kernel(
    x_ptr,  # reads the residual stream x (M, D), contiguous
    y_ptr,  # reads the branch output y (M, D), contiguous
    gate_ptr,  # reads gate of row r's frame (b, t) at b * gate_sb + t * gate_st (unused without HAS_GATE)
    shift_ptr,  # reads shift of row r's frame at b * shift_sb + t * shift_st (AFFINE: the bias (D,), strides 0)
    scale_ptr,  # reads scale, laid out like shift (AFFINE: the weight (D,), strides 0)
    x_out_ptr,  # writes the new stream x + gate * y (M, D), contiguous
    h_ptr,  # writes the normalised, modulated rows (M, D), contiguous: in x's dtype, or e4m3 with QUANT
    h_scale_ptr,  # writes each row's scale (M,) float32 with QUANT (h = q * scale); unused without
    M,
    D,
    N,
    T,
    gate_sb,
    gate_st,
    shift_sb,
    shift_st,
    scale_sb,
    scale_st,
    eps,
    HAS_GATE: tl.constexpr,
    AFFINE: tl.constexpr,
    QUANT: tl.constexpr,  # store h as e4m3 with one scale per row
    ROUND: tl.constexpr,  # QUANT: round in registers before the cast (the interpreter's cast truncates)
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < D)[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    frame = rows // N
    b = frame // T
    t = frame % T
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_GATE:
        g = tl.load(gate_ptr + (b * gate_sb + t * gate_st)[:, None] + cols[None, :], mask=mask, other=0.0)
        y = g.to(tl.float32) * y
    x_new = (x + y).to(x_out_ptr.dtype.element_ty)
    tl.store(x_out_ptr + offs, x_new, mask=mask)
    x = x_new.to(tl.float32)  # the stored value, as the unfused norm would read it
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    sh = tl.load(shift_ptr + (b * shift_sb + t * shift_st)[:, None] + cols[None, :], mask=mask, other=0.0)
    sc = tl.load(scale_ptr + (b * scale_sb + t * scale_st)[:, None] + cols[None, :], mask=mask, other=0.0)
    if AFFINE:
        h = xc * rstd[:, None] * sc.to(tl.float32) + sh.to(tl.float32)
    else:
        h = xc * rstd[:, None] * (1.0 + sc.to(tl.float32)) + sh.to(tl.float32)
    if QUANT:  # quantize_rows of h as the unfused norm would have stored it
        h = tl.where(mask, h.to(x_out_ptr.dtype.element_ty).to(tl.float32), 0.0)
        h_scale = _row_scale(tl.max(tl.abs(h), axis=1))
        tl.store(h_scale_ptr + rows, h_scale, mask=rows < M)
        tl.store(h_ptr + offs, _to_e4m3(h, tl.div_rn(1.0, h_scale), ROUND), mask=mask)
    else:
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=mask)


def residual_norm(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor | None,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    affine: bool = False,
    quantize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """x, y: (B, T, N, D); gate: (B, T, 1, D) or None (a plain add). Without ``affine``,
    shift, scale: (B, T, 1, D) (may be strided views); with it, the LayerNorm's bias and weight
    (D,). Returns (x + gate * y, its LayerNorm modulated), both (B, T, N, D), contiguous; with
    ``quantize`` the second is ``(q, scale)``: q (M, D) float8_e4m3fn and scale (M, 1) float32,
    M = B * T * N, as ``quantize_rows`` gives for that h."""
    bsz, t, n, d = x.shape
    x, y = x.contiguous(), y.contiguous()
    has_gate = gate is not None
    if not has_gate:
        gate, g_b, g_t = x, 0, 0  # never read
    else:
        gate, g_b, g_t = frame_rows(gate, x)
    if affine:
        if shift.shape != (d,) or scale.shape != (d,):
            raise ValueError(f"affine bias {tuple(shift.shape)} and weight {tuple(scale.shape)} must be ({d},)")
        shift, scale = shift.contiguous(), scale.contiguous()
        sh_b = sh_t = sc_b = sc_t = 0
    else:
        shift, sh_b, sh_t = frame_rows(shift, x)
        scale, sc_b, sc_t = frame_rows(scale, x)
    m = bsz * t * n
    x_out = torch.empty_like(x)
    if quantize:
        h = torch.empty(m, d, device=x.device, dtype=torch.float8_e4m3fn)
        h_scale = torch.empty(m, 1, device=x.device, dtype=torch.float32)
    else:
        h, h_scale = torch.empty_like(x), x  # h_scale never written
    block_d = triton.next_power_of_2(d)
    block_m = row_block(block_d)
    _residual_norm_kernel[(triton.cdiv(m, block_m),)](
        x, y, gate, shift, scale, x_out, h, h_scale, m, d, n, t, g_b, g_t, sh_b, sh_t, sc_b, sc_t, eps,
        HAS_GATE=has_gate, AFFINE=affine, QUANT=quantize, ROUND=quantize and interpreting(),
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4 if block_d <= 1024 else 8,
    )
    return x_out, (h, h_scale) if quantize else h


def residual_norm_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor | None,
    shift: torch.Tensor,
    scale: torch.Tensor,
    eps: float,
    affine: bool = False,
    quantize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """The torch reference (model/ops.py's math: the unfused add, then the norm; with
    ``quantize``, then ``quantize_rows_ref`` of that h)."""
    x = x + y if gate is None else torch.addcmul(x, y, gate)
    if affine:
        h = F.layer_norm(x, (x.shape[-1],), scale, shift, eps)
    else:
        h = torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=eps), 1 + scale)
    return x, quantize_rows_ref(h) if quantize else h
