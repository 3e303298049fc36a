"""The frame-offset keys kernel against its reference: fresh random inputs at several shapes,
slots in any frame order (a wrapped ring) and pinned sinks sharing frame index 0; the chunk-slots-only
rewrite; and a cache's kept offset keys, which must equal a full rebuild after every write."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.kernels.frame_offset_keys import frame_offset_keys, frame_offset_keys_ref
from morphcam.kernels import dispatch
from morphcam.model import ops
from morphcam.model.config import ModelConfig
from morphcam.model.kv_cache import KVRingCache


@pytest.mark.parametrize("heads,slots,n,dh,positions", [(2, 3, 5, 16, 4), (4, 6, 144, 64, 8), (1, 2, 7, 24, 3)])
def test_frame_offset_keys_matches_reference(heads, slots, n, dh, positions, device, rel_error):
    g = torch.Generator().manual_seed(heads * 100 + slots)
    k = torch.randn(heads, slots * n, dh, generator=g).to(device)
    emb = torch.randn(positions, heads, dh, generator=g).to(device)
    # A wrapped ring: slots out of frame order, two sinks at index 0.
    idx = torch.tensor([0, 0, *torch.randperm(positions, generator=g).tolist()][:slots], dtype=torch.long).to(device)
    out = frame_offset_keys(k, emb, idx)
    ref = frame_offset_keys_ref(k.double(), emb.double(), idx)
    assert out.shape == (heads, slots * n, dh)
    assert rel_error(out, ref) < 1e-6
    # Every key of a slot moved by exactly its frame's offset.
    s = 1 if slots > 1 else 0
    torch.testing.assert_close(out[:, s * n:(s + 1) * n] - k[:, s * n:(s + 1) * n],
                               emb[idx[s]][:, None, :].expand(heads, n, dh), rtol=1e-5, atol=1e-5)


def test_ops_routes_frame_offset_keys(device, monkeypatch):
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    k, emb, idx = torch.randn(2, 3 * 4, 8), torch.randn(5, 2, 8), torch.tensor([0, 4, 2])
    want = frame_offset_keys_ref(k, emb, idx)
    k, emb, idx = k.to(device), emb.to(device), idx.to(device)
    with dispatch.force("torch"):
        torch.testing.assert_close(ops.frame_offset_keys(k, emb, idx), want.to(device))
    with torch.no_grad(), dispatch.force("triton"):
        torch.testing.assert_close(ops.frame_offset_keys(k, emb, idx), want.to(device), rtol=1e-5, atol=1e-5)
    assert calls == ["frame_offset_keys"]  # the torch leg called no kernel, the Triton leg this one


@pytest.mark.parametrize("fn", [frame_offset_keys, frame_offset_keys_ref], ids=["triton", "reference"])
@pytest.mark.parametrize("heads,slots,n,dh,chunk", [(2, 6, 5, 16, 2), (3, 12, 24, 32, 3)])
def test_chunk_slots_only_rewrites_those_slots(fn, heads, slots, n, dh, chunk, device):
    g = torch.Generator().manual_seed(slots * 7 + n)
    k = torch.randn(heads, slots * n, dh, generator=g).to(device)
    emb = torch.randn(slots + 2, heads, dh, generator=g).to(device)
    idx = torch.randperm(slots + 2, generator=g)[:slots].to(device)
    chunk_slots = torch.arange(slots - chunk, slots, device=device).roll(1)  # any order
    sentinel = torch.full_like(k, 7.0)
    out = fn(k, emb, idx, chunk_slots, sentinel.clone())
    full = frame_offset_keys_ref(k, emb, idx)
    keep = (slots - chunk) * n
    assert torch.equal(out[:, :keep], sentinel[:, :keep]), "slots outside the chunk must be left as they were"
    torch.testing.assert_close(out[:, keep:], full[:, keep:], rtol=1e-6, atol=1e-6)
    whole = torch.empty_like(k)
    assert fn(k, emb, idx, out=whole) is whole
    torch.testing.assert_close(whole, full, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out="):
        fn(k, emb, idx, chunk_slots)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cache_keeps_offset_keys_equal_to_a_full_rebuild(backend, device):
    """Chunks of several forwards each (new keys at the chunk's slots every forward), past the ring's
    wrap, a KV-recache write at explicit slots, and a reset: after every write the kept offset keys
    equal the keys plus offsets computed from scratch."""
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=2, n_heads=2, dim=32, ffn_dim=64,
                              frames_per_step=2, sink_frames=2, window_frames=4, frame_positions=12)
    cache = KVRingCache(cfg, (8, 8), device, torch.float32)
    g = torch.Generator().manual_seed(3)
    emb = [torch.randn(cfg.frame_positions, cfg.n_heads, cfg.head_dim, generator=g).to(device) for _ in range(2)]
    n, f = cache.tokens_per_frame, cfg.frames_per_step

    def check():
        for layer in range(cfg.n_layers):
            keys, values = cache.keys_values(layer, emb[layer])
            want = frame_offset_keys_ref(cache.k[layer], emb[layer], cache.frame_idx)
            torch.testing.assert_close(keys, want, rtol=1e-6, atol=1e-6)
            assert values.data_ptr() == cache.v[layer].data_ptr()

    def fresh(frames):
        return torch.randn(cfg.n_heads, frames * n, cfg.head_dim, generator=g).to(device)

    with torch.no_grad(), dispatch.force(backend):
        for chunk in range(7):  # the ring (4 + 2 slots) wraps from the fourth chunk on
            cache.begin_chunk()
            for _ in range(3):  # a chunk's forwards: only its own slots get new keys
                for layer in range(cfg.n_layers):
                    cache.write_kv(layer, fresh(f), fresh(f))
                check()
            cache.commit()
            check()  # the commit aged every window frame: new frame indices
            if chunk == 4:  # KV-recache: a visible frame's keys rewritten at explicit slots
                for layer in range(cfg.n_layers):
                    cache.write_kv(layer, fresh(1), fresh(1), slice(1, 2))
                check()
        pointer = cache.keys_values(0, emb[0])[0].data_ptr()
        cache.reset()
        cache.begin_chunk()
        for layer in range(cfg.n_layers):
            cache.write_kv(layer, fresh(f), fresh(f))
        check()
        assert cache.keys_values(0, emb[0])[0].data_ptr() == pointer, "the offset keys are one buffer, kept"
