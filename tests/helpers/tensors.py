"""Tensors shaped as the network makes them, for kernel tests."""
from __future__ import annotations

import torch


def wan_norm_inputs(gated: bool, affine: bool, device: str = "cuda"):
    """A residual norm's inputs at the wan-1.3b-shape forward's size (3 frames x 1560 tokens x 1536,
    bf16): x, y, gate (or None), shift, scale; the adaLN modulation as strided per-frame views, or
    with ``affine`` a LayerNorm's bias and weight."""
    bf, (b, t, n, d) = torch.bfloat16, (1, 3, 1560, 1536)
    x, y = torch.randn(2, b, t, n, d, device=device, dtype=bf).unbind(0)
    shift, scale, gate = (torch.randn(b, t, 3, 1, d, device=device, dtype=bf) * 0.5).unbind(2)
    if affine:
        shift, scale = torch.randn(d, device=device, dtype=bf) * 0.1, 1 + torch.randn(d, device=device, dtype=bf) * 0.1
    return x, y, gate if gated else None, shift, scale
