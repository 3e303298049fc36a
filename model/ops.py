"""The one dispatch point for the denoiser's hot operations.

Every attention, norm, modulation and RoPE call of the network goes through these functions,
so the fused Triton kernels (``morphcam.kernels``) replace them in one place without forking
the network. ``morphcam.kernels.dispatch`` decides per call: the kernels for CUDA tensors in
inference when Triton is installed, the plain-torch code below otherwise (CPU, training: the
kernels have no backward). Tests force either with ``dispatch.force``. The torch code here is
the reference each kernel must match.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..kernels import dispatch
from ..kernels.ring import LaneRingView, LaneSlots, RingSlots, RingView

E4M3_MAX = 448.0  # e4m3's largest finite value
FP8_MIN_SCALE = 1e-30 / E4M3_MAX  # a row of zeros quantizes to zeros, not NaNs
QUANTIZE_LAYOUTS = ("row", "row_wide", "tiles", "tiles_narrow")  # kernels.quantize_rows.LAYOUTS


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); mask: bool, broadcastable to (B, H, Lq, Lk), True = attend.
    Returns (B, H, Lq, D).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis. x: (..., D); weight: (D,)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis. x: (..., D); weight, bias: (D,) or None."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """tanh-approximated GELU (the FFN activation)."""
    if dispatch.use_triton(x):
        return dispatch.kernel("gelu")(x)
    return F.gelu(x, approximate="tanh")


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)``, tanh-approximated: the FFN's first half.

    x: (..., K); weight: (M, K); bias: (M,). Returns (..., M). On CUDA inference one cuBLASLt
    GEMM adds the bias and applies the GELU in its epilogue (``addmm_gelu``); elsewhere, or
    with ``dispatch.gemm_epilogues(False)``, the GEMM is followed by ``gelu``.
    """
    if dispatch.use_gemm_epilogue(x):
        return addmm_gelu(x, weight, bias)
    return gelu(F.linear(x, weight, bias))


def addmm_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``torch._addmm_activation`` on x's 2-D view: GEMM, bias and GELU in one call.

    Shapes as ``linear_gelu``. Its GELU is the tanh approximation on CUDA (in the epilogue where
    cuBLASLt takes the shapes, else a separate kernel) but the exact erf GELU on a CPU.
    """
    y = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
    return y.view(*x.shape[:-1], weight.shape[0])


def quantize_rows(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise FP8 (e4m3) quantization of a GEMM input, after the tanh GELU with ``gelu``.

    x: (..., K) -> q: (M, K) float8_e4m3fn and scale: (M, 1) float32 (``amax(row) * (1 / 448)``), with
    M = x.numel() // K and ``q * scale`` ~= x (or gelu(x)). One Triton kernel on the GPU path.
    """
    if dispatch.use_triton(x):
        # The kernel's launch layouts compute the same bytes; the fastest is measured once per shape.
        kernel = dispatch.kernel("quantize_rows")
        ways = {name: (lambda name=name: kernel(x, gelu, name)) for name in QUANTIZE_LAYOUTS}
        key = (x.shape[-1], x.numel() // x.shape[-1], x.dtype, gelu, x.device)
        return ways[dispatch.fastest("quantize_rows", key, ways, default="row", on_gpu=x.is_cuda)]()
    return _quantized_rows(x, gelu)


def _quantized_rows(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch math of ``quantize_rows`` (and of ``residual_norm``'s with ``quantize``)."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    if gelu:
        x2 = F.gelu(x2, approximate="tanh")
    scale = (x2.abs().amax(dim=1, keepdim=True) * (1.0 / E4M3_MAX)).clamp_min(FP8_MIN_SCALE)
    return (x2 * (1.0 / scale)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


def linear_fp8(q: torch.Tensor, scale: torch.Tensor, weight_q: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """``(q * scale) @ (weight_q * weight_scale).T + bias`` on FP8 tensor cores (``torch._scaled_mm``,
    row-wise scales, fast accumulation).

    q: (M, K) e4m3; scale: (M, 1) float32; weight_q: (N, K) e4m3; weight_scale: (1, N) float32;
    bias: (N,) in ``out_dtype`` or None. Returns (M, N) in ``out_dtype`` (bfloat16 on a GPU). On a
    CPU (tests) the same product in float32 from the dequantized operands.
    """
    if not q.is_cuda:  # the same product from the dequantized operands (not every CPU build has row-wise _scaled_mm)
        y = (q.float() * scale) @ (weight_q.float() * weight_scale.t()).t()
        return (y if bias is None else y + bias.float()).to(out_dtype)
    return torch._scaled_mm(q, weight_q.t(), scale_a=scale, scale_b=weight_scale, bias=bias,
                            out_dtype=out_dtype, use_fast_accum=True)


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """adaLN: LayerNorm without affine, then ``x * (1 + scale) + shift``.

    x: (B, T, N, D); shift, scale: (B, T, 1, D) (one modulation per frame, shared by its tokens).
    """
    if dispatch.use_triton(x):
        return dispatch.kernel("layer_norm_modulate")(x, shift, scale, eps)
    return _modulated_norm(x, shift, scale, eps)


def _modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """The torch math of ``layer_norm_modulate`` (and of ``residual_norm``'s norm)."""
    x = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + gate * y``. x, y: (B, T, N, D); gate: (B, T, 1, D)."""
    if dispatch.use_triton(x):
        return dispatch.kernel("gated_residual")(x, y, gate)
    return torch.addcmul(x, y, gate)


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
    """A residual add and the LayerNorm that reads its result: returns ``(x, h)`` with
    ``x = x + gate * y`` (``x + y`` when gate is None) and ``h`` the LayerNorm of that x.

    x, y: (B, T, N, D). Without ``affine``, ``h = norm(x) * (1 + scale) + shift`` (adaLN, as
    ``layer_norm_modulate``; shift, scale: (B, T, 1, D)); with it, shift and scale are the
    LayerNorm's bias and weight (D,). On the Triton path one kernel does both; the torch path
    is the unfused add then the norm, as ``gated_residual`` and ``layer_norm`` compute them.
    With ``quantize``, h comes as ``quantize_rows`` of it, ``(q, scale)``: q (M, D) e4m3 and
    scale (M, 1) float32, M = B * T * N (on the Triton path written by the same kernel).
    """
    if dispatch.use_triton(x):
        return dispatch.kernel("residual_norm")(x, y, gate, shift, scale, eps, affine, quantize=quantize)
    x = x + y if gate is None else torch.addcmul(x, y, gate)
    h = layer_norm(x, scale, shift, eps) if affine else _modulated_norm(x, shift, scale, eps)
    return x, _quantized_rows(h) if quantize else h


def apply_rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (interleaved halves) by per-token angles.

    x: (..., N, D) with N the tokens of one frame; cos, sin: (N, D // 2), broadcast over the
    leading axes (batch, heads, frames). Returns x's shape. Rows and columns each own half of
    the pairs (see ``rope_2d_tables``).
    """
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out1 = x1 * cos - x2 * sin
    out2 = x1 * sin + x2 * cos
    return torch.stack((out1, out2), dim=-1).flatten(-2)


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
    """QK-norm (RMSNorm per head) and 2D RoPE of q and k; in a stream step also the K/V write.

    q, k, v: (B, H, T * N, Dh); q_weight, k_weight: (Dh,); cos, sin: (N, Dh // 2). Returns
    (q, k), (B, H, T * N, Dh). With ``ring`` (one ``RingSlots`` per batch row) the normalised k
    and v are written into each session's ring at the chunk's slots and the returned k is None.
    The kernel's q and k are views of token-major memory ((B, T * N, H, Dh)), the torch path's
    are contiguous: the same values, and attention takes either.
    """
    if dispatch.use_triton(q):
        return dispatch.kernel("qk_norm_rope")(q, k, v, q_weight, k_weight, cos, sin, eps, ring)
    t = q.shape[2] // cos.shape[0]
    q = apply_rope_2d(rms_norm(q, q_weight, eps).unflatten(2, (t, -1)), cos, sin).flatten(2, 3)
    k = apply_rope_2d(rms_norm(k, k_weight, eps).unflatten(2, (t, -1)), cos, sin).flatten(2, 3)
    if ring is None:
        return q, k
    if isinstance(ring, LaneSlots):  # sessions in the lanes of one pool
        ring.write(k, v)
        return q, None
    for i, r in enumerate(ring):
        n = r.tokens_per_frame
        # The slot is a device tensor: index_copy_ writes where the ring is without reading it back.
        r.k.unflatten(1, (-1, n)).index_copy_(1, r.slot, k[i].unflatten(1, (t, n)))
        r.v.unflatten(1, (-1, n)).index_copy_(1, r.slot, v[i].unflatten(1, (t, n)))
    return q, None


def frame_offset_keys(
    k: torch.Tensor,
    frame_emb: torch.Tensor,
    frame_idx: torch.Tensor,
    slots: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keys with each slot's frame-index offset added, for attention that reads plain keys.

    k: (H, S * N, Dh), S slots of N tokens; frame_emb: (P, H, Dh); frame_idx: (S,) long.
    Returns (H, S * N, Dh) with ``frame_emb[frame_idx[s], h]`` added to slot s's keys of head h,
    written into ``out`` (contiguous, k's shape) when given. With ``slots`` ((G,) long, on the
    device) only those slots of ``out`` (then required) are rewritten; its other slots are kept.
    """
    if dispatch.use_triton(k):
        return dispatch.kernel("frame_offset_keys")(k, frame_emb, frame_idx, slots, out)
    if slots is not None and out is None:
        raise ValueError("frame_offset_keys: writing only some slots needs the output to write them into (out=)")
    s = frame_idx.shape[0]
    if slots is None:
        keys = (k.unflatten(1, (s, -1)) + frame_emb[frame_idx].transpose(0, 1)[:, :, None, :]).flatten(1, 2)
        return keys if out is None else out.copy_(keys)
    # index_copy_ at device-side slots: nothing is read back to the host (CUDA-graph safe).
    chunk = k.unflatten(1, (s, -1)).index_select(1, slots) + frame_emb[frame_idx[slots]].transpose(0, 1)[:, :, None, :]
    out.unflatten(1, (s, -1)).index_copy_(1, slots, chunk.to(out.dtype))
    return out


def ring_attention(q: torch.Tensor, ring: RingView) -> torch.Tensor:
    """One session's chunk attending to its KV ring (sinks, window and the chunk itself).

    q: (H, Lq, Dh). Keys get their slot's frame-index offset ``frame_emb[frame_idx]``; slots not
    marked in ``token_valid`` are masked. Returns (H, Lq, Dh); the kernel's (which reads q
    through its strides) is a view of token-major memory, (Lq, H, Dh).
    """
    if dispatch.use_triton(q):
        # Our kernel reads the ring in place; keys with their offsets written out and then SDPA's
        # fused kernels (cuDNN, FLASH) win at large shapes. Measured once per shape, on the GPU.
        ways = {"kernel": lambda: dispatch.kernel("ring_attention")(q, ring),
                "sdpa": lambda: _ring_attention_sdpa(q, ring)}
        key = (q.shape, ring.k.shape, q.dtype, q.device)
        return ways[dispatch.fastest("ring_attention", key, ways, default="kernel", on_gpu=q.is_cuda)]()
    return _ring_attention_sdpa(q, ring)


def _ring_attention_sdpa(q: torch.Tensor, ring: RingView) -> torch.Tensor:
    """``ring_attention`` as keys with their offsets (``frame_offset_keys``) and masked SDPA."""
    k = frame_offset_keys(ring.k, ring.frame_emb, ring.frame_idx)
    return attention(q[None], k[None], ring.v[None], ring.token_valid.view(1, 1, 1, -1))[0]


def lane_ring_attention(q: torch.Tensor, ring: LaneRingView) -> torch.Tensor:
    """``ring_attention`` for a batch of sessions whose caches are lanes of one pool.

    q: (B, H, Lq, Dh); row b attends to lane ``ring.lanes[b]``. Returns (B, H, Lq, Dh), token-major
    memory from the kernel, as ``ring_attention``.
    """
    if dispatch.use_triton(q):
        return dispatch.kernel("lane_ring_attention")(q, ring)
    lanes, (slots, n) = ring.lanes, ring.token_valid.shape[1:]
    k = ring.k[lanes].unflatten(2, (slots, n)) + ring.frame_emb[ring.frame_idx[lanes]].permute(0, 2, 1, 3)[:, :, :, None]
    mask = ring.token_valid[lanes].view(len(q), 1, 1, -1)
    return attention(q, k.flatten(2, 3), ring.v[lanes], mask)


def rope_2d_tables(
    grid_h: int, grid_w: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (grid_h * grid_w, head_dim // 2): first half of the pairs rotate by the
    patch row, second half by the patch column (row-major token order)."""
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64, device=device)
    cols = torch.arange(grid_w, dtype=torch.float64, device=device)
    ang_r = (rows[:, None] * freqs[None, :])[:, None, :].expand(grid_h, grid_w, quarter)
    ang_c = (cols[:, None] * freqs[None, :])[None, :, :].expand(grid_h, grid_w, quarter)
    ang = torch.cat((ang_r, ang_c), dim=-1).reshape(grid_h * grid_w, 2 * quarter)
    return ang.cos().to(dtype), ang.sin().to(dtype)
