"""Row-wise FP8 (e4m3) quantization of a GEMM's input, optionally through the FFN's GELU first.

Each row gets one float32 scale, ``amax(row) * (1 / 448)`` (448 is e4m3's largest finite value;
a product with the float32 reciprocal, because that is what torch computes for a division by a
number on a GPU, and a product rounds the same everywhere: kernel and reference agree bit for
bit on either device), and is
stored as ``round(row / scale)`` in e4m3, rounded to nearest even: the ``scale_a`` operand and the
A matrix of ``torch._scaled_mm`` with row-wise scaling. With ``gelu`` the row is first passed
through the tanh GELU (the FFN's first half, whose GEMM then runs without an epilogue), so the
activations are read once and written once, at a byte per element.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .dispatch import interpreting

E4M3_MAX = 448.0
# Smallest scale: a row of zeros (or of values under ~1e-30) quantizes to zeros instead of NaNs.
MIN_SCALE = 1e-30 / E4M3_MAX
# Widest row held in registers at once (8960, the wan-1.3b-shape FFN, pads to 16384: 32 values a
# thread at 16 warps); wider rows are read twice, in tiles.
MAX_ROW_TILE = 16384
LAYOUTS = ("row", "row_wide", "tiles", "tiles_narrow")


@triton.jit
def _gelu(x, FAST_TANH: tl.constexpr):
    """tanh GELU in float32. ``FAST_TANH`` (compiled for a GPU): the hardware's tanh.approx, one
    instruction where the exp formula takes a dozen and a division; the wide FFN rows are
    bound by this arithmetic, not by memory. Its error (~2^-11 relative) is far below e4m3's step."""
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2 / pi) * (x + 0.044715 x^3)
    if FAST_TANH:
        th = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32, is_pure=True,
                                       pack=1)
    else:
        u = tl.minimum(tl.maximum(u, -15.0), 15.0)  # tanh is +-1 in fp32 beyond; keeps exp finite
        th = 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)
    return 0.5 * x * (1.0 + th)


@triton.jit
def _round_e4m3(v):
    """``v`` (|v| <= 448) rounded to nearest even on the e4m3 grid, as float32. The GPU's cast
    does this itself; Triton's interpreter truncates where rounding carries into the exponent,
    so under the interpreter the wrapper rounds first and the cast is then exact."""
    a = tl.abs(v)
    e = tl.floor(tl.log2(tl.maximum(a, 0.015625)))  # the exponent; 2^-6 is the smallest normal
    step = tl.exp2(e - 3.0)  # 3 mantissa bits
    big = 12582912.0  # 1.5 * 2^23: adding and subtracting it rounds to an integer, ties to even
    r = ((a / step + big) - big) * step
    return tl.where(v < 0, -r, r)


@triton.jit
def _row_scale(amax):
    """A row's scale from its largest magnitude: amax * (1/448) as float32 (what torch computes on
    either device), never below MIN_SCALE."""
    return tl.maximum(amax * 0.002232142857142857, 2.2321428571428573e-33)


@triton.jit
def _to_e4m3(x, inv, ROUND: tl.constexpr):
    """Rows of x times their inverse scale ``inv``, clamped to e4m3's range, as e4m3 (rounded in
    registers first under the interpreter: ``ROUND``)."""
    v = tl.minimum(tl.maximum(x * inv[:, None], -448.0), 448.0)
    if ROUND:
        v = _round_e4m3(v)
    return v.to(tl.float8e4nv)


@triton.jit
def _quantize_rows_kernel(
    x_ptr,  # reads x (M, K), row stride stride_x, unit column stride
    q_ptr,  # writes q (M, K) e4m3, contiguous
    scale_ptr,  # writes scale (M,) float32: dequantized value = q * scale
    m,
    k,
    stride_x,
    GELU: tl.constexpr,
    ROUND: tl.constexpr,  # round in registers before the cast (the interpreter's cast truncates)
    FAST_TANH: tl.constexpr,  # the GELU's tanh by the GPU's approximate instruction (not in the interpreter)
    ONE_TILE: tl.constexpr,  # BLOCK_K >= k: one read of each row; else two passes over K in tiles
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < m
    cols = tl.arange(0, BLOCK_K)
    if ONE_TILE:  # the whole row in registers: read once
        mask = rmask[:, None] & (cols < k)[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if GELU:
            x = _gelu(x, FAST_TANH)
        scale = _row_scale(tl.max(tl.abs(x), axis=1))
        tl.store(scale_ptr + rows, scale, mask=rmask)
        tl.store(q_ptr + rows[:, None] * k + cols[None, :], _to_e4m3(x, tl.div_rn(1.0, scale), ROUND), mask=mask)
    else:
        amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, k, BLOCK_K):  # pass 1: each row's largest magnitude
            mask = rmask[:, None] & (k0 + cols < k)[None, :]
            x = tl.load(x_ptr + rows[:, None] * stride_x + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            if GELU:
                x = _gelu(x, FAST_TANH)
            amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
        scale = _row_scale(amax)
        tl.store(scale_ptr + rows, scale, mask=rmask)
        inv = tl.div_rn(1.0, scale)
        for k0 in range(0, k, BLOCK_K):  # pass 2: scale, round, store a byte per element (reads hit L2)
            mask = rmask[:, None] & (k0 + cols < k)[None, :]
            x = tl.load(x_ptr + rows[:, None] * stride_x + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            if GELU:
                x = _gelu(x, FAST_TANH)
            tl.store(q_ptr + rows[:, None] * k + k0 + cols[None, :], _to_e4m3(x, inv, ROUND), mask=mask)


def _padding_tile(k: int) -> int:
    """The widest of 1024, 512 and 256 columns that pads K by at most 5%; else the one padding least."""
    for b in (1024, 512, 256):
        if -k % b <= 0.05 * k:
            return b
    return min((1024, 512, 256), key=lambda b: (-k % b, -b))


def launch_layout(k: int, layout: str = "row") -> tuple[int, int, int]:
    """(rows per program, columns per tile, warps) of ``layout`` for rows of K elements.

    Every layout computes the same bytes; which is fastest depends on K and the GPU, so
    ``ops.quantize_rows`` times them once per shape (``dispatch.fastest``):
      row          the whole row in registers, one read per element, 32 values a thread
      row_wide     the same with twice the warps, 16 values a thread
      tiles        two passes over K in tiles of 1024, 512 or 256 columns (the widest padding K by
                   at most 5%, or the one padding it least;
                   the second pass re-reads from L2), 4096 elements a tile, 8 warps
      tiles_narrow the same with 2048 elements a tile and 4 warps
    Rows wider than ``MAX_ROW_TILE`` take the tiles in the row layouts too.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown quantize layout {layout!r}; choose from {LAYOUTS}")
    if layout.startswith("row") and triton.next_power_of_2(k) <= MAX_ROW_TILE:
        block_k = triton.next_power_of_2(k)
        block_m = max(1, min(16, 4096 // block_k))
        per_warp = 1024 if layout == "row" else 512
        return block_m, block_k, max(4, min(32, block_m * block_k // per_warp))
    block_k = _padding_tile(k) if k > 256 else triton.next_power_of_2(k)
    elements, warps = (2048, 4) if layout == "tiles_narrow" else (4096, 8)
    return max(1, elements // block_k), block_k, warps


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def quantize_rows(x: torch.Tensor, gelu: bool = False, layout: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """x: (..., K) float -> q: (M, K) float8_e4m3fn, scale: (M, 1) float32, M = x.numel() // K,
    with ``q * scale`` ~= x (or ~= gelu(x) with ``gelu``, tanh-approximated). ``layout``: how
    programs split the work (``launch_layout``); the result is the same for each."""
    x2 = _rows(x)
    m, k = x2.shape
    q = torch.empty(m, k, device=x.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty(m, 1, device=x.device, dtype=torch.float32)
    block_m, block_k, warps = launch_layout(k, layout)
    _quantize_rows_kernel[(triton.cdiv(m, block_m),)](
        x2, q, scale, m, k, x2.stride(0), GELU=gelu, ROUND=interpreting(), FAST_TANH=not interpreting(),
        ONE_TILE=block_k >= k,
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps,
    )
    return q, scale


def quantize_rows_ref(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch reference: the same scales and e4m3 values (torch's cast rounds to nearest even)."""
    x2 = _rows(x).float()
    if gelu:
        x2 = F.gelu(x2, approximate="tanh")
    scale = (x2.abs().amax(dim=1, keepdim=True) * (1.0 / E4M3_MAX)).clamp_min(MIN_SCALE)
    return (x2 * (1.0 / scale)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale
