"""How the fused attention kernels see a session's KV ring (no Triton import: the model builds these).

Both describe views of ``morphcam.model.KVRingCache`` buffers; nothing is copied.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RingSlots:
    """Where one session's chunk K/V go: one layer's ring buffers and the chunk's slots.

    k, v: (H, slots * N, Dh) views of the cache, written in place; slot: (F,) long on the device,
    the cache slot of each frame of the chunk (a tensor, so a CUDA graph replays the write at
    whatever slot the ring has reached); tokens_per_frame: N.
    """

    k: torch.Tensor
    v: torch.Tensor
    slot: torch.Tensor
    tokens_per_frame: int


@dataclass(frozen=True)
class RingView:
    """One layer of one session's ring, as the attention reads it.

    k, v: (H, slots * N, Dh); frame_idx: (slots,) long, the bounded frame index of each slot;
    token_valid: (slots, N) bool; frame_emb: (frame_positions, H, Dh), the per-index key offset.
    """

    k: torch.Tensor
    v: torch.Tensor
    frame_idx: torch.Tensor
    token_valid: torch.Tensor
    frame_emb: torch.Tensor


@dataclass(frozen=True)
class LaneRingView:
    """One layer of a ``LanePool``'s rings, read for a batch of lanes.

    k, v: (lanes, H, slots * N, Dh), each lane's (H, slots * N, Dh) block contiguous; frame_idx:
    (lanes, slots) long; token_valid: (lanes, slots, N) bool; frame_emb: (frame_positions, H, Dh);
    lanes: (B,) long on the device, the lane of each batch row.
    """

    k: torch.Tensor
    v: torch.Tensor
    frame_idx: torch.Tensor
    token_valid: torch.Tensor
    frame_emb: torch.Tensor
    lanes: torch.Tensor
