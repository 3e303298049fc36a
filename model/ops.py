"""The one dispatch point for the denoiser's hot operations.

Every attention, norm, modulation and RoPE call of the network goes through these functions,
so a fused-kernel backend (``morphcam.kernels``) can replace them in one place without forking
the network. Each function here is the plain-torch reference with the signature a kernel
must keep.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """tanh-approximated GELU (the FFN activation; a fused kernel puts it in the matmul epilogue)."""
    return F.gelu(x, approximate="tanh")


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """adaLN: LayerNorm without affine, then ``x * (1 + scale) + shift``.

    x: (B, T, N, D); shift, scale: (B, T, 1, D) (one modulation per frame, shared by its tokens).
    """
    x = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + gate * y``. x, y: (B, T, N, D); gate: (B, T, 1, D)."""
    return torch.addcmul(x, y, gate)


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
