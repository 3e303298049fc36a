"""Per-session KV ring cache: pinned sink frames plus a rolling window, fixed capacity.

Slots (frames) are laid out ``[sink 0 .. S-1 | ring 0 .. R-1]`` with ``R = window + chunk``:
the chunk being generated is written into the ring slots that held the frames just past the
window, so nothing visible is evicted before the chunk has attended to it. Every buffer is
allocated once and written in place. The ring's position lives twice: as a host integer
(``frames_seen``, for KV-recache and logs) and as a device counter (``pos``) from which each
step computes its slots on the device, so a step never reads back from the device and a
captured CUDA graph replays correctly wherever the ring stands.

Frame positions are a *bounded frame index* (see ``frame_index``): for non-sink frames the age
relative to the chunk being generated, for sinks a fixed index from the top of the table. Keys
are stored without it; the attention adds a learned per-index key offset at read time, so a
frame's cached K/V never needs rewriting as it ages.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from . import ops
from .ops import RingSlots, RingView


def frame_index(frame: int, chunk_start: int, config: ModelConfig) -> int:
    """Bounded frame index of key ``frame`` as seen from the chunk starting at ``chunk_start``.

    Non-sink frames: ``chunk_start + F - 1 - frame`` (0 for the chunk's last frame, growing with
    age, at most window + F - 1). Sink frames: ``frame_positions - 1 - frame``, fixed forever.
    """
    if frame < config.sink_frames:
        return config.frame_positions - 1 - frame
    return chunk_start + config.frames_per_step - 1 - frame


def frame_visible(frame: int, query_frame: int, config: ModelConfig) -> bool:
    """Whether ``query_frame`` attends to ``frame``: same or earlier chunk, and a sink or in the window."""
    f = config.frames_per_step
    chunk_start = (query_frame // f) * f
    if frame >= chunk_start + f:
        return False
    return frame < config.sink_frames or frame >= chunk_start - config.window_frames


def frame_slot(frame: int, config: ModelConfig) -> int:
    """Cache slot that holds ``frame``: sinks in order, later frames round the ring."""
    if frame < config.sink_frames:
        return frame
    return config.sink_frames + (frame - config.sink_frames) % config.ring_frames


class KVRingCache:
    """Keys, values and the network inputs (for KV-recache) of one session's visible frames.

    Buffers (``slots = sink + window + frames_per_step``, ``N`` tokens per frame):
      k, v:        (layers, heads, slots * N, head_dim)
      frame_idx:   (slots,) long, bounded frame index of each slot
      token_valid: (slots, N) bool, True where a slot holds a visible frame
      x_in, cond:  (slots, C, h, w) the noisy latent and conditioning latent the K/V came from
      sigma, step: (slots,) their noise level and step size
      pos:         () long, committed frames (the device twin of ``frames_seen``)
      slot_idx:    (frames_per_step,) long, the slots of the chunk being generated
    """

    def __init__(
        self,
        config: ModelConfig,
        latent_hw: tuple[int, int],
        device: torch.device | str,
        dtype: torch.dtype,
        buffers: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``buffers``: existing tensors of ``buffer_specs``' shapes to use instead of allocating
        (views of one lane of a ``LanePool``, which batches many sessions' caches)."""
        self.config = config
        self.latent_hw = latent_hw
        p = config.patch_size
        self.tokens_per_frame = (latent_hw[0] // p) * (latent_hw[1] // p)
        for name, (shape, dt) in self.buffer_specs(config, latent_hw, dtype).items():
            setattr(self, name, torch.zeros(shape, device=device, dtype=dt) if buffers is None else buffers[name])
        self._chunk_offsets = torch.arange(config.frames_per_step, device=device)
        self.frames_seen = 0  # committed frames, host-side: read by recache, never by a step
        # keys_values' offset keys: allocated on first use (only attention that reads plain keys
        # needs them), rebuilt once per chunk and layer, then only at the chunk's slots.
        self._offset_keys: torch.Tensor | None = None
        self._offset_stale = [True] * config.n_layers

    @staticmethod
    def buffer_specs(
        config: ModelConfig, latent_hw: tuple[int, int], dtype: torch.dtype
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Name -> (shape, dtype) of every per-session buffer (see the class docstring)."""
        p = config.patch_size
        slots, n = config.cache_frames, (latent_hw[0] // p) * (latent_hw[1] // p)
        kv_shape = (config.n_layers, config.n_heads, slots * n, config.head_dim)
        latent = (slots, config.latent_channels, *latent_hw)
        return {
            "k": (kv_shape, dtype), "v": (kv_shape, dtype),
            "frame_idx": ((slots,), torch.long), "token_valid": ((slots, n), torch.bool),
            "x_in": (latent, dtype), "cond": (latent, dtype),
            "sigma": ((slots,), dtype), "step": ((slots,), dtype),
            "pos": ((), torch.long), "slot_idx": ((config.frames_per_step,), torch.long),
        }

    # ---- bookkeeping ------------------------------------------------------------------------------
    @property
    def chunk_slots(self) -> slice:
        """Slots of the chunk about to be generated (contiguous: sink and ring are chunk multiples)."""
        start = frame_slot(self.frames_seen, self.config)
        return slice(start, start + self.config.frames_per_step)

    def visible_frames(self) -> list[int]:
        """Absolute indices of the committed frames the next chunk will see, oldest first."""
        c, s = self.frames_seen, self.config.sink_frames
        return list(range(min(s, c))) + list(range(max(s, c - self.config.window_frames), c))

    def begin_chunk(self) -> None:
        """Compute the next chunk's slots, mark them valid and give them their frame indices.

        Device work only (``frame_slot`` and ``frame_index`` on the ``pos`` counter), so it is
        captured in a CUDA graph and replays at whatever slot the ring has reached.
        """
        cfg, s = self.config, self.config.sink_frames
        frame = self.pos + self._chunk_offsets  # absolute indices of the chunk's frames
        is_sink = frame < s
        self.slot_idx.copy_(torch.where(is_sink, frame, s + (frame - s).remainder(cfg.ring_frames)))
        # frame_index: sinks count down from the top of the table; the chunk's own frames are
        # F - 1 - f (0 for its last frame).
        index = torch.where(is_sink, cfg.frame_positions - 1 - frame, cfg.frames_per_step - 1 - self._chunk_offsets)
        self.frame_idx.index_copy_(0, self.slot_idx, index)
        self.token_valid.index_fill_(0, self.slot_idx, True)
        self._offsets_changed()

    def commit(self) -> None:
        """The chunk is final: every ring frame ages by one chunk."""
        self.commit_device()
        self.commit_host()

    def commit_device(self) -> None:
        """``commit``'s device half (captured in a CUDA graph)."""
        cfg = self.config
        # The clamp only touches slots about to be rewritten (or not yet used); it keeps every
        # index inside the table even between commit and the next begin_chunk.
        self.frame_idx[cfg.sink_frames :].add_(cfg.frames_per_step).clamp_(max=cfg.frame_positions - 1)
        self.pos.add_(cfg.frames_per_step)
        self._offsets_changed()

    def commit_host(self) -> None:
        """``commit``'s host half: the host mirror of ``pos`` (run once per replay of a graph)."""
        self.frames_seen += self.config.frames_per_step

    def reset(self) -> None:
        """Forget every frame, and clear what they left: masked-out keys and values still reach
        attention's output as 0 * value, so a non-finite value left by an earlier session (a lane
        or spare cache is reused) would turn the next session's frames to NaN."""
        for buf in (self.k, self.v, self.x_in, self.cond):
            buf.zero_()
        self.token_valid.fill_(False)
        self.frame_idx.zero_()
        self.pos.zero_()
        self.frames_seen = 0
        self._offsets_changed()

    def _offsets_changed(self) -> None:
        """Every slot's frame index (or keys) may have changed: the next ``keys_values`` of each
        layer rebuilds its offset keys in full. Host bookkeeping only, so within a captured CUDA
        graph the full and the chunk-only passes replay in the order they were recorded."""
        self._offset_stale = [True] * self.config.n_layers

    # ---- data ---------------------------------------------------------------------------------
    def write_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor, slots: slice | None = None) -> None:
        """Store one layer's keys/values for frames in ``slots`` (default: the current chunk).

        k, v: (heads, frames * N, head_dim).
        """
        n = self.tokens_per_frame
        if slots is None:  # the chunk's slots, from the device (no host index)
            self.k[layer].unflatten(1, (-1, n)).index_copy_(1, self.slot_idx, k.unflatten(1, (-1, n)))
            self.v[layer].unflatten(1, (-1, n)).index_copy_(1, self.slot_idx, v.unflatten(1, (-1, n)))
            return
        self.k[layer, :, slots.start * n : slots.stop * n].copy_(k)
        self.v[layer, :, slots.start * n : slots.stop * n].copy_(v)
        self._offset_stale[layer] = True  # keys outside the chunk's slots changed (KV-recache)

    def ring_slots(self, layer: int) -> RingSlots:
        """Where a fused QK-norm/RoPE kernel writes this layer's chunk K/V."""
        return RingSlots(self.k[layer], self.v[layer], self.slot_idx, self.tokens_per_frame)

    def ring_view(self, layer: int, frame_emb: torch.Tensor) -> RingView:
        """This layer's ring as the fused attention reads it. frame_emb: (frame_positions, heads, head_dim)."""
        return RingView(self.k[layer], self.v[layer], self.frame_idx, self.token_valid, frame_emb)

    def store_inputs(self, x_in: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, step: torch.Tensor) -> None:
        """Keep the chunk's network inputs so a later KV-recache can re-run them.

        x_in, cond: (F, C, h, w); sigma, step: (F,).
        """
        for buf, value in ((self.x_in, x_in), (self.cond, cond), (self.sigma, sigma), (self.step, step)):
            buf.index_copy_(0, self.slot_idx, value.to(buf.dtype))

    def keys_values(self, layer: int, frame_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys with each slot's frame-index offset added, and values.

        The cache's own keys are never rewritten: the offset keys are kept beside them (one more
        buffer of k's size, allocated on the first call), rebuilt in full on a layer's first call
        after ``begin_chunk``, ``commit``, ``reset`` or a ``write_kv`` at explicit slots, and
        otherwise only at the chunk's slots, the only keys a chunk's later forwards change (they
        go in through ``ring_slots`` or ``write_kv`` at the chunk's slots). Caches batched as
        lanes of a pool take their offsets in ``lane_ring_attention`` and never come here. A fused
        attention kernel adds the (slots, heads, head_dim) offsets on the fly instead.

        frame_emb: (frame_positions, heads, head_dim), the same tensor for a layer on every call.
        Returns (heads, slots * N, head_dim) twice.
        """
        if self._offset_keys is None:
            with torch.inference_mode(False):  # a plain tensor, writable in and out of inference mode
                self._offset_keys = torch.empty_like(self.k)
        out = self._offset_keys[layer]
        if self._offset_stale[layer]:
            ops.frame_offset_keys(self.k[layer], frame_emb, self.frame_idx, out=out)
            self._offset_stale[layer] = False
        else:
            ops.frame_offset_keys(self.k[layer], frame_emb, self.frame_idx, self.slot_idx, out)
        return out, self.v[layer]

    def key_mask(self) -> torch.Tensor:
        """(1, 1, slots * N) bool view, True for keys the chunk may attend to."""
        return self.token_valid.view(1, 1, -1)

    def storage_pointers(self) -> tuple[int, ...]:
        """Data pointers of every buffer, to check that nothing was ever reallocated."""
        return tuple(
            t.data_ptr()
            for t in (
                self.k, self.v, self.frame_idx, self.token_valid, self.x_in, self.cond, self.sigma, self.step,
                self.pos, self.slot_idx,
            )
        )
