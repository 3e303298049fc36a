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


@dataclass(frozen=True)
class LaneSlots:
    """Where a batch's chunk K/V go when the sessions' caches are lanes of one pool.

    k, v: (lanes, H, slots * N, Dh) one layer's view of the pool, each lane's block contiguous;
    lanes: (B,) long, the lane of each batch row; slots: (B, F) long, the cache slot of each frame
    of each row's chunk (both on the device); tokens_per_frame: N.
    """

    k: torch.Tensor
    v: torch.Tensor
    lanes: torch.Tensor
    slots: torch.Tensor
    tokens_per_frame: int

    def write(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The torch way: k, v (B, H, F * N, Dh) into the lanes' rings (one ``index_put_`` each)."""
        n, f = self.tokens_per_frame, self.slots.shape[1]
        rows = self.lanes[:, None].expand_as(self.slots)
        for ring, value in ((self.k, k), (self.v, v)):
            # Advanced indices around a slice put the indexed axes first: (B, F, H, N, Dh).
            ring.unflatten(2, (-1, n))[rows, :, self.slots] = value.unflatten(2, (f, n)).transpose(1, 2).to(ring.dtype)
