"""Ring attention for a batch of sessions whose caches are lanes of one pool, in one launch.

The same kernel as ``ring_attention`` (``_ring_attention_kernel`` with ``LANES``): program axis 2
is the batch row, which reads its lane from a device tensor and offsets its k, v, frame_idx and
token_valid pointers to that lane. No gather or copy of the caches, and the lanes are data, so
a CUDA graph of the step serves whichever sessions occupy the lanes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ring import LaneRingView
from .ring_attention import launch


def lane_ring_attention(q: torch.Tensor, ring: LaneRingView) -> torch.Tensor:
    """q: (B, H, Lq, Dh) (any strides: token-major as ``qk_norm_rope`` makes it, or contiguous), row b
    attending to lane ``ring.lanes[b]``. Returns (B, H, Lq, Dh) whose memory is token-major."""
    lanes, h, rows, dh = ring.k.shape
    if ring.k.stride() != ring.v.stride() or ring.k.stride()[1:] != (rows * dh, dh, 1):
        raise ValueError("each lane's k and v must be a contiguous (H, slots * N, Dh) block, with equal strides")
    if not (ring.frame_idx.is_contiguous() and ring.token_valid.is_contiguous()):
        raise ValueError("frame_idx and token_valid must be contiguous (lanes, ...) tensors")
    if len(ring.lanes) != q.shape[0]:
        raise ValueError(f"{len(ring.lanes)} lanes for a batch of {q.shape[0]}")
    return launch(q, ring, ring.lanes, ring.k.stride(0))


def lane_ring_attention_ref(q: torch.Tensor, ring: LaneRingView) -> torch.Tensor:
    """The torch reference: gather the lanes, offset keys materialised, SDPA under the mask."""
    lanes, (slots, n) = ring.lanes, ring.token_valid.shape[1:]
    emb = ring.frame_emb[ring.frame_idx[lanes]].permute(0, 2, 1, 3)[:, :, :, None]  # (B, H, slots, 1, Dh)
    k = (ring.k[lanes].unflatten(2, (slots, n)) + emb).flatten(2, 3)
    return F.scaled_dot_product_attention(q, k, ring.v[lanes], attn_mask=ring.token_valid[lanes].view(len(q), 1, 1, -1))
