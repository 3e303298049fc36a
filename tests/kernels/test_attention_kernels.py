"""QK-norm + RoPE + ring write, and ring attention, against their references on real ring states."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref
from morphcam.kernels.ring_attention import ring_attention, ring_attention_ref
from morphcam.model.config import ModelConfig
from morphcam.model.kv_cache import KVRingCache
from morphcam.model.ops import rope_2d_tables

DTYPES = [(torch.float32, 1e-5), (torch.float16, 3e-3)]


def _config(sink, window, per_step, heads=2, head_dim=16):
    return dataclasses.replace(
        ModelConfig.from_name("tiny"), name="kernels", n_layers=2, n_heads=heads, dim=heads * head_dim,
        sink_frames=sink, window_frames=window, frames_per_step=per_step,
    )


def _ring(cfg, grid, frames_seen, device, dtype):
    """A cache that has generated ``frames_seen`` frames (random K/V), and the chunk's slots set."""
    cache = KVRingCache(cfg, (2 * grid[0], 2 * grid[1]), device, dtype)
    cache.k.normal_()
    cache.v.normal_()
    for _ in range(frames_seen // cfg.frames_per_step):
        cache.begin_chunk()
        cache.commit()
    cache.begin_chunk()
    return cache


def _qkv(b, h, length, dh, device, dtype):
    """q, k, v as the network makes them: strided head views of one (B, L, 3, H, Dh) projection."""
    qkv = torch.randn(b, length, 3, h, dh, device=device, dtype=dtype) * 2
    return [t.transpose(1, 2) for t in qkv.unbind(2)]


# (sink, window, frames per step, frames already generated, patch grid, batch)
CASES = [
    (1, 4, 1, 0, (2, 3), 1),  # first frame: only the sink slot is valid
    (1, 2, 1, 11, (2, 3), 2),  # the ring has wrapped several times
    (2, 4, 2, 6, (2, 2), 1),  # chunks of two frames, one slot still empty
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_qk_norm_rope_writes_the_ring(case, dtype, tol, device, rel_error):
    sink, window, per_step, seen, grid, b = case
    cfg = _config(sink, window, per_step)
    h, dh = cfg.n_heads, cfg.head_dim
    n = grid[0] * grid[1]
    cos, sin = rope_2d_tables(*grid, dh, cfg.rope_base, torch.device(device), dtype)
    q, k, v = _qkv(b, h, per_step * n, dh, device, dtype)
    qw, kw = torch.randn(dh, device=device, dtype=dtype), torch.randn(dh, device=device, dtype=dtype)

    q_ref, k_ref = qk_norm_rope_ref(q.double(), k.double(), v.double(), qw.double(), kw.double(), cos.double(),
                                    sin.double(), 1e-6)
    q_out, k_out = qk_norm_rope(q, k, v, qw, kw, cos, sin, 1e-6)
    assert rel_error(q_out, q_ref) < tol and rel_error(k_out, k_ref) < tol
    # (B, H, L, Dh) views of token-major memory: attention's output can then be too.
    assert q_out.shape == k_out.shape == q.shape
    assert q_out.transpose(1, 2).is_contiguous() and k_out.transpose(1, 2).is_contiguous()

    caches = [_ring(cfg, grid, seen, device, dtype) for _ in range(b)]
    before = [(c.k.clone(), c.v.clone()) for c in caches]
    q_out, none = qk_norm_rope(q, k, v, qw, kw, cos, sin, 1e-6, [c.ring_slots(1) for c in caches])
    assert none is None and rel_error(q_out, q_ref) < tol and q_out.transpose(1, 2).is_contiguous()
    for i, (c, (k0, v0)) in enumerate(zip(caches, before)):
        ref_k, ref_v = k0.double(), v0.double()
        r = dataclasses.replace(c.ring_slots(1), k=ref_k[1], v=ref_v[1])
        qk_norm_rope_ref(q[i : i + 1].double(), k[i : i + 1].double(), v[i : i + 1].double(), qw.double(),
                         kw.double(), cos.double(), sin.double(), 1e-6, [r])
        assert rel_error(c.k, ref_k) < tol and torch.equal(c.v, ref_v.to(dtype))
        assert torch.equal(c.k[0], k0[0])  # other layers untouched


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_ring_attention(case, dtype, tol, device, rel_error):
    sink, window, per_step, seen, grid, _ = case
    cfg = _config(sink, window, per_step)
    cache = _ring(cfg, grid, seen, device, dtype)
    frame_emb = torch.randn(cfg.frame_positions, cfg.n_heads, cfg.head_dim, device=device, dtype=dtype)
    q = torch.randn(cfg.n_heads, per_step * grid[0] * grid[1], cfg.head_dim, device=device, dtype=dtype)
    view = cache.ring_view(0, frame_emb)
    out = ring_attention(q, view)
    as64 = dataclasses.replace(view, k=view.k.double(), v=view.v.double(), frame_emb=frame_emb.double())
    assert rel_error(out, ring_attention_ref(q.double(), as64)) < tol
    # The mask matters here: without it the answer differs.
    full = dataclasses.replace(as64, token_valid=torch.ones_like(view.token_valid))
    if not view.token_valid.all():
        assert rel_error(out, ring_attention_ref(q.double(), full)) > 10 * tol


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_ring_attention_reads_any_q_layout(dtype, tol, device, rel_error):
    """q token-major (as qk_norm_rope stores it), contiguous or strided with a unit Dh stride:
    the same values; the output is token-major whatever q is, so ``[None]`` and the block's
    ``transpose(1, 2).reshape`` after it are views."""
    sink, window, per_step, seen, grid, _ = CASES[1]
    cfg = _config(sink, window, per_step)
    h, dh, lq = cfg.n_heads, cfg.head_dim, per_step * grid[0] * grid[1]
    cache = _ring(cfg, grid, seen, device, dtype)
    view = cache.ring_view(1, torch.randn(cfg.frame_positions, h, dh, device=device, dtype=dtype))
    token_major = torch.randn(lq, h, dh, device=device, dtype=dtype).transpose(0, 1)
    contiguous = token_major.contiguous()
    padded = torch.zeros(h, lq, 2 * dh, device=device, dtype=dtype)[:, :, :dh].copy_(token_major)
    as64 = dataclasses.replace(view, k=view.k.double(), v=view.v.double(), frame_emb=view.frame_emb.double())
    want = ring_attention_ref(contiguous.double(), as64)
    outs = [ring_attention(q, view) for q in (token_major, contiguous, padded)]
    for out in outs:
        assert out.shape == (h, lq, dh) and out.transpose(0, 1).is_contiguous()
        assert rel_error(out, want) < tol
        blocked = out[None].transpose(1, 2).reshape(1, lq, h * dh)
        assert blocked.data_ptr() == out.data_ptr() and blocked._base is not None
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
