"""How self-attention sees other frames: one network, two contexts.

The denoiser's attention layers call ``context.attend(layer, q, k, v, frame_emb)`` and do not
know whether they run over a whole clip or one chunk of a stream:

- ``BlockCausalContext``: training / reference forward over a clip of T frames. Each chunk of
  ``frames_per_step`` frames sees itself, the sink frames and the window before it (a
  block-causal mask that reproduces sink + window visibility exactly), with the same bounded
  frame indices the stream would give.
- ``StreamContext``: inference. The chunk's K/V go into each session's ``KVRingCache`` in place
  (written by ``ops.qk_norm_rope`` at the slots ``ring_slots`` names), and the chunk attends to
  the whole cache under its validity mask, read in its ring layout (``ops.ring_attention``).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from . import ops
from .config import ModelConfig
from .kv_cache import KVRingCache, frame_index, frame_visible
from .ops import RingSlots

KVRecorder = Callable[[int, torch.Tensor, torch.Tensor], None]


def empty_token_major(q: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of q's (B, H, L, Dh) shape, dtype and device whose memory is
    token-major, (B, L, H, Dh), whatever q's layout: the attention output the block's output
    projection reads through ``transpose(1, 2).reshape`` (a view, no copy)."""
    b, h, length, dh = q.shape
    return torch.empty((b, length, h, dh), device=q.device, dtype=q.dtype).transpose(1, 2)


class AttentionContext(Protocol):
    def ring_slots(self, layer: int) -> list[RingSlots] | None:
        """Where the layer's normalised K/V are written before ``attend`` (one per batch row), or None."""
        ...

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_emb: torch.Tensor
    ) -> torch.Tensor:
        """q, k, v: (B, H, T * N, Dh) for the frames being run (q may be token-major, as the
        Triton ``qk_norm_rope`` makes it); frame_emb: (P, H, Dh).

        Returns (B, H, T * N, Dh), token-major where the context allocates it (``empty_token_major``)
        so that the caller's ``transpose(1, 2).reshape`` is a view.
        """
        ...


class BlockCausalContext:
    """Full-sequence attention over a clip with a block-causal sink + window mask.

    ``frame_ids`` are the absolute stream indices of the clip's frames (default 0..T-1); KV-recache
    passes the surviving frames' indices, so visibility and frame indices match the stream.
    ``record(layer, k, v)``, if given, receives each layer's (B, H, T * N, Dh) keys and values.
    """

    def __init__(
        self,
        config: ModelConfig,
        n_frames: int,
        tokens_per_frame: int,
        device: torch.device | str,
        frame_ids: Sequence[int] | None = None,
        record: KVRecorder | None = None,
    ) -> None:
        ids = list(range(n_frames)) if frame_ids is None else list(frame_ids)
        if len(ids) != n_frames:
            raise ValueError(f"frame_ids has {len(ids)} entries for {n_frames} frames")
        f = config.frames_per_step
        self.n = tokens_per_frame
        self.record = record
        # One entry per query chunk: its rows, the frame index of every key frame, and the mask.
        self.chunks: list[tuple[slice, torch.Tensor, torch.Tensor]] = []
        start = 0
        while start < n_frames:
            stop = start
            while stop < n_frames and ids[stop] // f == ids[start] // f:
                stop += 1
            chunk_start = (ids[start] // f) * f
            # Keys outside the mask get a clamped (unused) index so the table lookup stays in range.
            top = config.frame_positions - 1
            idx = torch.tensor([min(max(frame_index(j, chunk_start, config), 0), top) for j in ids], device=device)
            vis = torch.tensor([frame_visible(j, ids[start], config) for j in ids], device=device)
            mask = vis.repeat_interleave(tokens_per_frame).view(1, 1, 1, -1)
            self.chunks.append((slice(start * self.n, stop * self.n), idx, mask))
            start = stop

    def ring_slots(self, layer):
        return None  # keys and values stay in the forward's tensors

    def attend(self, layer, q, k, v, frame_emb):
        if self.record is not None:
            self.record(layer, k, v)
        b, h, length, dh = k.shape
        out = empty_token_major(q)
        k_frames = k.unflatten(2, (length // self.n, self.n))
        for rows, idx, mask in self.chunks:
            # Keys of every frame, offset by their frame index as seen from this chunk.
            k_eff = (k_frames + frame_emb[idx].transpose(0, 1)[None, :, :, None, :]).flatten(2, 3)
            out[:, :, rows] = ops.attention(q[:, :, rows], k_eff, v, mask)
        return out


class StreamContext:
    """Streaming attention: batch row b belongs to ``caches[b]``.

    The chunk's K/V are already in the caches when ``attend`` runs (``ops.qk_norm_rope`` wrote
    them at ``ring_slots``), so ``attend`` reads only q and the rings; its k and v are unused.
    """

    def __init__(self, caches: Sequence[KVRingCache]) -> None:
        self.caches = list(caches)

    def ring_slots(self, layer):
        return [cache.ring_slots(layer) for cache in self.caches]

    def attend(self, layer, q, k, v, frame_emb):
        # Sessions have their own caches (and may sit at different ring phases), so attention runs
        # per session; the projections around it stay batched.
        # One cache: the kernel's output is token-major already (the [None] is a view of it).
        if len(self.caches) == 1:
            return ops.ring_attention(q[0], self.caches[0].ring_view(layer, frame_emb))[None]
        out = empty_token_major(q)
        for b, cache in enumerate(self.caches):
            out[b] = ops.ring_attention(q[b], cache.ring_view(layer, frame_emb))
        return out
