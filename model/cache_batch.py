"""The caches of one step's batch of sessions: per session, or lanes of one pool.

``StreamGenerator.denoise`` talks to its batch's caches through a ``CacheBatch``:

- ``SessionCaches``: each session's own ``KVRingCache``, visited one by one (the default). A CUDA
  graph of such a step bakes in those sessions' buffers, so it serves only them.
- ``LaneCaches``: sessions whose caches are lanes of one ``LanePool`` (one tensor per buffer with
  a leading lane axis). Every cache operation reads the batch's lanes from a device tensor
  (``StepInputs.lanes``), so one captured graph per batch size serves any sessions of the pool:
  the daemon keeps a graph per batch size instead of one per group of sessions.

A lane's ``KVRingCache`` (``LanePool.cache``) is a view of the pool, so everything per session
(eager steps, KV-recache, reset) works on it unchanged.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from . import ops
from .attention import StreamContext
from .config import ModelConfig
from .kv_cache import KVRingCache
from .ops import LaneRingView, LaneSlots


class CacheBatch(Protocol):
    """The cache operations of one step, for the whole batch (device work only, no host syncs)."""

    def begin_chunk(self) -> None: ...

    def context(self): ...

    def store_inputs(self, x_in: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, step: torch.Tensor) -> None:
        """x_in, cond: (B, F, C, h, w); sigma, step: (B, F)."""

    def commit_device(self) -> None: ...


class SessionCaches:
    """Each session's own cache, batch row b being ``caches[b]``."""

    def __init__(self, caches: Sequence[KVRingCache]) -> None:
        self.caches = list(caches)

    def begin_chunk(self) -> None:
        for c in self.caches:
            c.begin_chunk()

    def context(self) -> StreamContext:
        return StreamContext(self.caches)

    def store_inputs(self, x_in, cond, sigma, step) -> None:
        for i, c in enumerate(self.caches):
            c.store_inputs(x_in[i], cond[i], sigma[i], step[i])

    def commit_device(self) -> None:
        for c in self.caches:
            c.commit_device()


class LanePool:
    """``lanes`` session caches of one frame size in shared buffers: ``KVRingCache``'s buffers with
    a leading lane axis (k, v: (lanes, layers, heads, slots * N, head_dim); frame_idx: (lanes,
    slots); token_valid: (lanes, slots, N); pos: (lanes,); ...). Allocated once; ``acquire`` hands
    out an emptied lane and its cache view, ``release`` takes it back."""

    def __init__(
        self, config: ModelConfig, latent_hw: tuple[int, int], lanes: int, device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        if lanes < 1:
            raise ValueError(f"a lane pool needs at least one lane, got {lanes}")
        self.config, self.latent_hw, self.lanes = config, latent_hw, lanes
        self.device = torch.device(device)
        self.buffers = {
            name: torch.zeros((lanes, *shape), device=device, dtype=dt)
            for name, (shape, dt) in KVRingCache.buffer_specs(config, latent_hw, dtype).items()
        }
        self.tokens_per_frame = self.buffers["token_valid"].shape[-1]
        self._chunk_offsets = torch.arange(config.frames_per_step, device=device)
        self._true = torch.ones((), device=device, dtype=torch.bool)
        self._free = list(range(lanes))

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["buffers"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> tuple[int, KVRingCache] | None:
        """The lowest free lane and an empty cache viewing it, or None when every lane is taken."""
        if not self._free:
            return None
        lane = self._free.pop(0)
        cache = KVRingCache(self.config, self.latent_hw, self.device, self.buffers["k"].dtype,
                            buffers={name: buf[lane] for name, buf in self.buffers.items()})
        cache.reset()  # a lane keeps its last session's frames until it is emptied here
        return lane, cache

    def release(self, lane: int) -> None:
        if not 0 <= lane < self.lanes or lane in self._free:
            raise ValueError(f"lane {lane} is not taken")
        self._free.append(lane)
        self._free.sort()


class LaneCaches:
    """The caches of the lanes ``lanes`` ((B,) long on the device) of ``pool``, as one batch."""

    def __init__(self, pool: LanePool, lanes: torch.Tensor) -> None:
        self.pool, self.lanes = pool, lanes
        self.slots: torch.Tensor | None = None  # (B, F) long, set by begin_chunk
        self.rows: torch.Tensor | None = None  # (B, F) long, lanes broadcast to slots' shape

    def begin_chunk(self) -> None:
        """``KVRingCache.begin_chunk`` for every lane at once, from the lanes' ``pos`` counters."""
        p, cfg = self.pool, self.pool.config
        s, offsets = cfg.sink_frames, p._chunk_offsets
        frame = p.pos[self.lanes][:, None] + offsets[None, :]  # (B, F) absolute frame indices
        is_sink = frame < s
        self.slots = torch.where(is_sink, frame, s + (frame - s).remainder(cfg.ring_frames))
        self.rows = self.lanes[:, None].expand_as(self.slots)
        p.slot_idx.index_put_((self.lanes,), self.slots)
        index = torch.where(is_sink, cfg.frame_positions - 1 - frame, cfg.frames_per_step - 1 - offsets[None, :])
        p.frame_idx.index_put_((self.rows, self.slots), index)
        p.token_valid.index_put_((self.rows, self.slots), p._true)

    def context(self) -> "LaneContext":
        return LaneContext(self)

    def store_inputs(self, x_in, cond, sigma, step) -> None:
        p = self.pool
        for buf, value in ((p.x_in, x_in), (p.cond, cond), (p.sigma, sigma), (p.step, step)):
            buf.index_put_((self.rows, self.slots), value.to(buf.dtype))

    def commit_device(self) -> None:
        """``KVRingCache.commit_device`` for every lane (lanes in a batch are distinct)."""
        p, cfg = self.pool, self.pool.config
        s = cfg.sink_frames
        idx = p.frame_idx[self.lanes]  # (B, slots), a copy
        idx[:, s:] = (idx[:, s:] + cfg.frames_per_step).clamp_(max=cfg.frame_positions - 1)
        p.frame_idx.index_put_((self.lanes,), idx)
        p.pos.index_put_((self.lanes,), p.pos[self.lanes] + cfg.frames_per_step)

    def ring_slots(self, layer: int) -> LaneSlots:
        """Where QK-norm/RoPE writes this layer's chunk K/V (in the same launch, on the Triton path)."""
        p = self.pool
        return LaneSlots(p.k[:, layer], p.v[:, layer], self.lanes, self.slots, p.tokens_per_frame)


class LaneContext:
    """Stream attention over a pool's lanes: the chunk's K/V are in the lanes already (written by
    ``ops.qk_norm_rope`` at ``ring_slots``); one batched attention reads them."""

    def __init__(self, caches: LaneCaches) -> None:
        self.caches = caches

    def ring_slots(self, layer):
        return self.caches.ring_slots(layer)

    def attend(self, layer, q, k, v, frame_emb):
        c = self.caches
        p = c.pool
        view = LaneRingView(p.k[:, layer], p.v[:, layer], p.frame_idx, p.token_valid, frame_emb, c.lanes)
        return ops.lane_ring_attention(q, view)
