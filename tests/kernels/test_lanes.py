"""Caches as lanes of one pool: the batched attention kernel, whole steps against per-session
steps, and the daemon pipeline's lane assignment and fallbacks (CPU; the graphs in test_gpu)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.models import randomized, tiny_stream_config
from morphcam.kernels import dispatch
from morphcam.kernels.lane_ring_attention import lane_ring_attention, lane_ring_attention_ref
from morphcam.kernels.ring import LaneRingView
from morphcam.model.cache_batch import LaneCaches, LanePool
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(text_tokens=ModelConfig.from_name("tiny").text_tokens)


_config = tiny_stream_config


def _model(cfg, device="cpu"):
    return randomized(cfg).to(device)  # non-zero gates and output layer: every path affects the output


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3)])
def test_lane_attention_kernel(dtype, tol, device, rel_error):
    lanes, h, slots, n, dh = 5, 2, 4, 6, 16
    valid = torch.rand(lanes, slots, n, device=device) < 0.7
    valid[:, 0] = True
    ring = LaneRingView(
        torch.randn(lanes, 3, h, slots * n, dh, device=device, dtype=dtype)[:, 1],  # a layer's strided view
        torch.randn(lanes, 3, h, slots * n, dh, device=device, dtype=dtype)[:, 1],
        torch.randint(0, 8, (lanes, slots), device=device), valid,
        torch.randn(8, h, dh, device=device, dtype=dtype), torch.tensor([3, 0, 4], device=device),
    )
    q = torch.randn(3, h, 2 * n, dh, device=device, dtype=dtype)
    as64 = dataclasses.replace(ring, k=ring.k.double(), v=ring.v.double(), frame_emb=ring.frame_emb.double())
    want = lane_ring_attention_ref(q.double(), as64)
    out = lane_ring_attention(q, ring)
    assert rel_error(out, want) < tol
    # A token-major q (as qk_norm_rope stores it) gives the same values; the output is token-major
    # either way, so the block's reshape after attention is a view.
    token_major = q.transpose(1, 2).contiguous().transpose(1, 2)
    out_tm = lane_ring_attention(token_major, ring)
    assert torch.equal(out_tm, out)
    for o in (out, out_tm):
        assert o.shape == q.shape and o.transpose(1, 2).is_contiguous()
        assert o.transpose(1, 2).reshape(3, 2 * n, h * dh).data_ptr() == o.data_ptr()
    for b, lane in enumerate((3, 0, 4)):  # each row is its lane's own single-session attention
        from morphcam.kernels.ring import RingView
        from morphcam.kernels.ring_attention import ring_attention_ref

        one = RingView(as64.k[lane], as64.v[lane], ring.frame_idx[lane], valid[lane], as64.frame_emb)
        assert rel_error(want[b], ring_attention_ref(q[b].double(), one)) < 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3)])
def test_qk_norm_rope_writes_the_lanes(dtype, tol, device, rel_error):
    """One launch normalises and rotates q and k for the whole batch and writes each row's chunk
    into its own lane at its own slots; other lanes, slots and layers are untouched."""
    from morphcam.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref
    from morphcam.kernels.ring import LaneSlots
    from morphcam.model.ops import rope_2d_tables

    lanes, layers, h, slots, f, dh, grid = 4, 2, 2, 5, 2, 16, (2, 3)
    n = grid[0] * grid[1]
    pool_k = torch.randn(lanes, layers, h, slots * n, dh, device=device, dtype=dtype)
    pool_v = torch.randn_like(pool_k)
    qkv = torch.randn(3, f * n, 3, h, dh, device=device, dtype=dtype) * 2
    q, k, v = [t.transpose(1, 2) for t in qkv.unbind(2)]
    w1, w2 = torch.randn(2, dh, device=device, dtype=dtype).unbind(0)
    cos, sin = rope_2d_tables(*grid, dh, 100.0, torch.device(device), dtype)
    row_lanes = torch.tensor([2, 0, 3], device=device)
    row_slots = torch.tensor([[1, 2], [3, 4], [0, 1]], device=device)
    ref_k, ref_v = pool_k.double(), pool_v.double()
    q_ref, _ = qk_norm_rope_ref(q.double(), k.double(), v.double(), w1.double(), w2.double(), cos.double(),
                                sin.double(), 1e-6, LaneSlots(ref_k[:, 1], ref_v[:, 1], row_lanes, row_slots, n))
    q_out, none = qk_norm_rope(q, k, v, w1, w2, cos, sin, 1e-6,
                               LaneSlots(pool_k[:, 1], pool_v[:, 1], row_lanes, row_slots, n))
    assert none is None and rel_error(q_out, q_ref) < tol and q_out.transpose(1, 2).is_contiguous()
    assert rel_error(pool_k, ref_k) < tol and torch.equal(pool_v, ref_v.to(dtype))
    assert torch.equal(pool_k[1], ref_k[1].to(dtype)) and torch.equal(pool_k[:, 0], ref_k[:, 0].to(dtype))


@pytest.mark.parametrize("backend,per_step", [("torch", 1), ("triton", 1), ("torch", 2)])
def test_lane_steps_equal_session_steps(backend, per_step, text_encoder, device):
    """Sessions in pool lanes, stepped in changing groups and orders, compute what the same
    sessions with their own caches compute (exactly, on a CPU); the ring wraps and a lane is reused."""
    cfg = _config(frames_per_step=per_step, sink_frames=per_step, window_frames=2 * per_step,
                  cache_refresh=per_step == 2)
    gen = StreamGenerator(_model(cfg, device), text_encoder)  # embeddings move to the model's device
    pool = LanePool(cfg, cfg.latent_size(32, 32), 4, device, torch.float32)
    tol = 0 if device == "cpu" else 1e-4  # on a GPU, batched and per-session library calls may differ
    pool.acquire()  # lane 0 taken by someone else: the sessions below sit in lanes 1..3
    own = [gen.open_session(32, 32, "comic", seed=i) for i in range(3)]
    lanes = [pool.acquire() for _ in range(3)]
    laned = [gen.open_session(32, 32, "comic", seed=i, cache=c) for i, (_, c) in enumerate(lanes)]
    assert [lane for lane, _ in lanes] == [1, 2, 3]
    order = [[0, 1, 2], [2, 0], [1], [0, 2, 1], [2], [1, 0], [0, 1, 2]]
    with dispatch.force(backend):
        for idx in order:
            frames = torch.rand(len(idx), per_step, 3, 32, 32, device=device) * 2 - 1
            want = gen.step([own[i] for i in idx], frames)
            sessions = [laned[i] for i in idx]
            inputs = gen.prepare(sessions, frames)
            with torch.inference_mode():  # prepare's buffers are inference tensors
                inputs.lanes.copy_(torch.tensor([lanes[i][0] for i in idx], device=device))
            got = gen.forward(sessions, inputs, LaneCaches(pool, inputs.lanes))
            gen.finish(sessions)
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    for a, b in zip(own, laned):
        assert a.cache.frames_seen == b.cache.frames_seen and int(b.cache.pos) == b.cache.frames_seen
        for name in ("k", "v", "frame_idx", "token_valid", "x_in", "sigma"):
            torch.testing.assert_close(getattr(b.cache, name), getattr(a.cache, name), rtol=tol, atol=tol, msg=name)
    pool.release(2)
    lane, cache = pool.acquire()
    assert lane == 2 and not bool(cache.token_valid.any()) and int(cache.pos) == 0 and cache.frames_seen == 0
    assert pool.acquire() is None, "all four lanes are taken"


def test_pipeline_lanes_and_fallback(text_encoder):
    """Two lanes per size: the third session of a size gets its own cache; frames of mixed batches
    match a pipeline without lanes; closing frees a lane and the last session drops the pool."""
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    cfg = _config()
    pipes = [GeneratorPipeline(StreamGenerator(_model(cfg), text_encoder), "test", lanes=n) for n in (2, 0)]
    rng = np.random.default_rng(0)
    for p in pipes:
        for k, (w, h) in enumerate(((32, 32), (30, 28), (32, 32), (64, 32))):
            p.open_session(f"s{k}", SessionParams(w, h, PromptChange.single("comic"), seed=k))
    lanes_pipe = pipes[0]
    assert [lanes_pipe.pooled(f"s{k}") for k in range(4)] == [True, True, False, True]  # 30x28 pads to 32x32
    assert sorted(lanes_pipe._groups) == [(32, 32), (64, 32)]
    sizes = {"s0": (32, 32), "s1": (28, 30), "s2": (32, 32), "s3": (32, 64)}
    for step in range(4):
        ids = ["s0", "s1", "s2", "s3"] if step % 2 == 0 else ["s2", "s0"]
        batch = [(s, rng.integers(0, 256, (*sizes[s], 3), dtype=np.uint8)) for s in ids]
        a, b = (p.step(batch) for p in pipes)
        for x, y, (s, img) in zip(a, b, batch):
            assert isinstance(x, np.ndarray) and x.shape == img.shape and x.dtype == np.uint8, x
            assert np.array_equal(x, y)
    lanes_pipe.close_session("s0")
    lanes_pipe.open_session("s4", SessionParams(32, 32, PromptChange.single("comic"), seed=4))
    assert lanes_pipe.pooled("s4"), "a closed session's lane is given to the next one"
    for s in ("s1", "s2", "s4"):
        lanes_pipe.close_session(s)
    assert sorted(lanes_pipe._groups) == [(64, 32)]
    out = lanes_pipe.step([("s3", np.zeros((32, 64, 3), np.uint8)), ("s4", np.zeros((32, 32, 3), np.uint8))])
    assert isinstance(out[0], np.ndarray) and isinstance(out[1], KeyError)


class _Replay:
    """Stands in for a CUDA graph on a CPU: recording runs nothing (as a capture does), replay
    reruns the recorded step into the output buffer."""

    def __init__(self, fn) -> None:
        self.fn, self.output, self.replays = fn, torch.empty(0), 0

    def replay(self) -> None:
        result = self.fn()
        self.output.resize_(result.shape).copy_(result)
        self.replays += 1


def test_lane_graphs_keep_one_graph_per_batch_size(text_encoder):
    """LaneGraphs' bookkeeping on a CPU: the first step of a batch size runs eagerly and records,
    later steps of that size replay whichever sessions they carry, at most max_graphs are kept
    (least recently used dropped), and a failing capture leaves the stream eager."""
    from morphcam.model.cuda_graph import LaneGraphs

    cfg = _config()
    gen = StreamGenerator(_model(cfg), text_encoder)
    pool = LanePool(cfg, cfg.latent_size(32, 32), 4, "cpu", torch.float32)
    recorded = []

    def record(fn):
        graph = _Replay(fn)
        recorded.append(graph)
        return graph, graph.output

    graphs = LaneGraphs(gen, pool, 32, 32, max_graphs=2, record=record)
    lanes = [pool.acquire() for _ in range(4)]
    laned = [gen.open_session(32, 32, "comic", seed=i, cache=c) for i, (_, c) in enumerate(lanes)]
    own = [gen.open_session(32, 32, "comic", seed=i) for i in range(4)]
    order = [[0], [1, 2], [2], [3, 0, 1], [1, 3], [0], [2, 1, 3]]
    for idx in order:
        frames = torch.rand(len(idx), 1, 3, 32, 32) * 2 - 1
        want = gen.step([own[i] for i in idx], frames)
        got = graphs.step([laned[i] for i in idx], [lanes[i][0] for i in idx], frames)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # Sizes 1, 2, 1, 3, 2, 1, 3 with room for two graphs: size 1 is replayed once, then each new
    # size drops the least recently used graph (2, then 1, then 3, then 2) and records its own.
    assert [g.replays for g in recorded] == [1, 0, 0, 0, 0, 0]
    assert graphs.captures == 6 and sorted(graphs.batch_sizes()) == [1, 3]
    with pytest.raises(ValueError, match="distinct lane"):
        graphs.step([laned[0], laned[1]], [lanes[0][0], lanes[0][0]], torch.zeros(2, 1, 3, 32, 32))

    def failing(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    broken = LaneGraphs(gen, pool, 32, 32, record=failing)
    frames = torch.rand(1, 1, 3, 32, 32) * 2 - 1
    want = gen.step([own[0]], frames)
    torch.testing.assert_close(broken.step([laned[0]], [lanes[0][0]], frames), want, rtol=1e-6, atol=1e-6)
    assert isinstance(broken.capture_error, RuntimeError) and broken.batch_sizes() == []
