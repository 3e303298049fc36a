"""``dispatch.fastest``: a choice between ways of computing one op, measured once per shape on the
GPU; and ring attention choosing between our kernel and offset keys + SDPA through it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.kernels import dispatch
from morphcam.kernels.ring_attention import ring_attention_ref
from morphcam.model import ops
from morphcam.model.config import ModelConfig
from morphcam.model.kv_cache import KVRingCache


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    monkeypatch.setattr(dispatch, "_fastest", {})
    monkeypatch.setattr(dispatch, "_timings", {})


def _timed(monkeypatch, ms: dict[str, float]):
    """Candidates whose 'timing' is ``ms[name]``; returns the list of names timed."""
    timed = []

    def fake_time(fn):
        timed.append(fn())
        return ms[timed[-1]]

    monkeypatch.setattr(dispatch, "_time_ms", fake_time)
    return timed, {name: (lambda name=name: name) for name in ms}


def test_the_fastest_is_measured_once_and_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    timed, candidates = _timed(monkeypatch, {"kernel": 2.0, "sdpa": 0.5})
    assert dispatch.fastest("op", ("a",), candidates, default="kernel") == "sdpa"
    assert dispatch.fastest("op", ("a",), candidates, default="kernel") == "sdpa"
    assert timed == ["kernel", "sdpa"], "timed once per key, every candidate"
    assert dispatch.chosen() == {"op ('a',)": {"choice": "sdpa", "ms": {"kernel": 2.0, "sdpa": 0.5}}}
    # Another key is measured on its own.
    timed2, candidates2 = _timed(monkeypatch, {"kernel": 0.1, "sdpa": 0.5})
    assert dispatch.fastest("op", ("b",), candidates2, default="sdpa") == "kernel"


def test_no_timing_off_the_gpu_while_capturing_or_when_preferred(monkeypatch):
    timed, candidates = _timed(monkeypatch, {"kernel": 2.0, "sdpa": 0.5})
    assert dispatch.fastest("op", 1, candidates, default="kernel", on_gpu=False) == "kernel"
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert dispatch.fastest("op", 1, candidates, default="kernel") == "kernel"
    with dispatch.prefer("op", "sdpa"):
        assert dispatch.fastest("op", 1, candidates, default="kernel", on_gpu=False) == "sdpa"
        with dispatch.prefer("op", None):
            assert dispatch.fastest("op", 1, candidates, default="kernel", on_gpu=False) == "kernel"
    assert timed == [] and dispatch.chosen() == {}, "nothing measured, nothing kept"


def test_a_candidate_that_fails_is_never_chosen(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    timed, candidates = _timed(monkeypatch, {"kernel": 2.0, "sdpa": 0.5})

    def broken():
        raise RuntimeError("no kernel for this shape")

    candidates["sdpa"] = broken
    assert dispatch.fastest("op", 2, candidates, default="sdpa") == "kernel"


@pytest.mark.parametrize("pick", ["kernel", "sdpa"])
def test_ring_attention_computes_the_same_either_way(pick, device, monkeypatch, rel_error):
    """Both ways give the reference's answer under the validity mask; each calls only its own kernels."""
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=1, n_heads=2, dim=32, ffn_dim=64,
                              frames_per_step=2, sink_frames=2, window_frames=4, frame_positions=10)
    cache = KVRingCache(cfg, (6, 8), device, torch.float32)
    g = torch.Generator().manual_seed(5)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g))
    for _ in range(2):  # two chunks: the sink and part of the window valid, the rest masked
        cache.begin_chunk()
        cache.commit()
    cache.begin_chunk()
    emb = torch.randn(cfg.frame_positions, cfg.n_heads, cfg.head_dim, generator=g).to(device)
    q = torch.randn(cfg.n_heads, 2 * cache.tokens_per_frame, cfg.head_dim, generator=g).to(device)
    view = cache.ring_view(0, emb)
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    with torch.no_grad(), dispatch.force("triton"), dispatch.prefer("ring_attention", pick):
        out = ops.ring_attention(q, view)
    as64 = dataclasses.replace(view, k=view.k.double(), v=view.v.double(), frame_emb=emb.double())
    assert not view.token_valid.all() and rel_error(out, ring_attention_ref(q.double(), as64)) < 1e-5
    used = [c for c in calls if c in ("ring_attention", "frame_offset_keys")]
    assert used == (["ring_attention"] if pick == "kernel" else ["frame_offset_keys"]), calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ring_attention_measures_its_choice_on_the_gpu(rel_error):
    cfg = dataclasses.replace(ModelConfig.from_name("small"), n_layers=1)
    cache = KVRingCache(cfg, (36, 64), "cuda", torch.bfloat16)
    cache.k.normal_()
    cache.v.normal_()
    cache.begin_chunk()
    emb = torch.randn(cfg.frame_positions, cfg.n_heads, cfg.head_dim, device="cuda", dtype=torch.bfloat16) * 0.1
    q = torch.randn(cfg.n_heads, cfg.frames_per_step * cache.tokens_per_frame, cfg.head_dim, device="cuda",
                    dtype=torch.bfloat16)
    view = cache.ring_view(0, emb)
    with torch.no_grad():
        out = ops.ring_attention(q, view)
    (entry,) = dispatch.chosen().values()
    assert entry["choice"] in ("kernel", "sdpa") and set(entry["ms"]) == {"kernel", "sdpa"}
    as64 = dataclasses.replace(view, k=view.k.double(), v=view.v.double(), frame_emb=emb.double())
    assert rel_error(out, ring_attention_ref(q.double(), as64)) < 2e-2
