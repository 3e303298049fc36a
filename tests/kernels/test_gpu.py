"""GPU only: the kernels in bf16, and a CUDA-graph replay of whole frames against eager steps."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.models import randomized
from helpers.tensors import wan_norm_inputs
from morphcam.kernels import dispatch
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.network import RestyleModel
from morphcam.model.text import TextEncoder

pytestmark = pytest.mark.gpu


def test_kernels_bf16(rel_error):
    from morphcam.kernels.gated_residual import gated_residual, gated_residual_ref
    from morphcam.kernels.gelu import gelu, gelu_ref
    from morphcam.kernels.layer_norm_modulate import layer_norm_modulate, layer_norm_modulate_ref
    from morphcam.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref
    from morphcam.kernels.ring import RingView
    from morphcam.kernels.ring_attention import ring_attention, ring_attention_ref

    dev, bf = "cuda", torch.bfloat16
    x = torch.randn(1, 1, 576, 512, device=dev, dtype=bf)
    sh, sc, g = (torch.randn(1, 1, 3, 1, 512, device=dev, dtype=bf) * 0.5).unbind(2)
    assert rel_error(layer_norm_modulate(x, sh, sc, 1e-6), layer_norm_modulate_ref(x.float(), sh.float(), sc.float(), 1e-6)) < 1e-2
    assert rel_error(gated_residual(x, x, g), gated_residual_ref(x.float(), x.float(), g.float())) < 1e-2
    assert rel_error(gelu(x), gelu_ref(x.float())) < 1e-2

    h, n, dh, slots = 8, 576, 64, 8
    qkv = torch.randn(1, n, 3, h, dh, device=dev, dtype=bf)
    q, k, v = [t.transpose(1, 2) for t in qkv.unbind(2)]
    w = torch.randn(dh, device=dev, dtype=bf)
    cos, sin = torch.randn(2, n, dh // 2, device=dev, dtype=bf).unbind(0)
    f32 = [t.float() for t in (q, k, v, w, w, cos, sin)]
    for out, ref in zip(qk_norm_rope(q, k, v, w, w, cos, sin, 1e-6), qk_norm_rope_ref(*f32, 1e-6)):
        assert rel_error(out, ref) < 1e-2

    valid = torch.zeros(slots, n, device=dev, dtype=torch.bool)
    valid[:5] = True
    ring = RingView(torch.randn(h, slots * n, dh, device=dev, dtype=bf), torch.randn(h, slots * n, dh, device=dev, dtype=bf),
                    torch.randint(0, 16, (slots,), device=dev), valid, torch.randn(16, h, dh, device=dev, dtype=bf))
    ring32 = dataclasses.replace(ring, k=ring.k.float(), v=ring.v.float(), frame_emb=ring.frame_emb.float())
    qq = torch.randn(h, n, dh, device=dev, dtype=bf)
    assert rel_error(ring_attention(qq, ring), ring_attention_ref(qq.float(), ring32)) < 2e-2


@pytest.mark.parametrize("gated,affine", [(True, True), (False, False)])  # the block's two calls
def test_residual_norm_bf16(gated, affine, rel_error):
    """At a large frame (4680 tokens x 1536, three frames): the stream as torch rounds it, the
    norm of that stored stream, and the unfused ops' result."""
    from morphcam.kernels.residual_norm import residual_norm, residual_norm_ref

    x, y, gate, shift, scale = wan_norm_inputs(gated, affine)
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    ref_x, ref_h = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine)
    if gated:  # one rounding either way; a fused multiply-add may land one last place apart
        torch.testing.assert_close(x_out, ref_x, rtol=2**-7, atol=2**-7)
    else:
        assert torch.equal(x_out, ref_x)
    zero = torch.zeros_like(x_out, dtype=torch.float32)
    _, from_stored = residual_norm_ref(x_out.float(), zero, None, shift.float(), scale.float(), 1e-6, affine)
    assert rel_error(h, from_stored) < 1e-2
    assert rel_error(h, ref_h) < 1e-2


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_graph_replay_equals_eager(backend):
    from morphcam.model.cuda_graph import CudaGraphRunner

    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=2, window_frames=2)
    model = randomized(cfg).to("cuda", torch.bfloat16)
    gen = StreamGenerator(model, TextEncoder(cfg.text_tokens, torch.device("cuda"), torch.bfloat16))
    eager, graphed = (gen.open_session(256, 144, "pencil sketch", seed=5) for _ in range(2))
    runner = CudaGraphRunner(gen, [graphed], 256, 144)
    with dispatch.force(backend):
        for i in range(8):  # the 1 + 2 + 1 ring wraps; frame 0 runs eagerly and captures
            frame = torch.rand(1, 1, 3, 144, 256, device="cuda") * 2 - 1
            a = gen.step([eager], frame)
            b = runner.step(frame)
            assert runner.capture_error is None and runner.captured
            torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-2)  # same kernels; cuBLAS may pick others in capture
    assert graphed.cache.frames_seen == 8 and int(graphed.cache.pos) == 8


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_stream_step_never_syncs(backend):
    """Every per-frame op is asynchronous: torch raises on any synchronising call in the step."""
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=2)
    model = RestyleModel(cfg).eval().to("cuda", torch.bfloat16)
    gen = StreamGenerator(model, TextEncoder(cfg.text_tokens, torch.device("cuda"), torch.bfloat16))
    session = gen.open_session(256, 144, "pencil sketch", seed=5)
    frame = torch.rand(1, 1, 3, 144, 256, device="cuda") * 2 - 1
    with dispatch.force(backend):
        gen.step([session], frame)  # first use: kernel compiles and library set-up may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                gen.step([session], frame)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_daemon_pipeline_with_graphs_matches_eager():
    """Two sessions join, one leaves: each batch size replays its graph and frames match eager ones."""
    import numpy as np

    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    pipes = []
    for graphs in (False, True):
        torch.manual_seed(0)  # the same random weights in both: only the execution differs
        pipes.append(GeneratorPipeline.load("tiny", device="cuda", cuda_graphs=graphs))
    assert pipes[1].cuda_graphs and not pipes[0].cuda_graphs
    rng = np.random.default_rng(0)
    for p in pipes:
        p.open_session("a", SessionParams(256, 144, PromptChange.single("pencil sketch"), seed=1))
    for i in range(10):
        if i == 3:
            for p in pipes:
                p.open_session("b", SessionParams(256, 144, PromptChange.single("oil painting"), seed=2))
        if i == 7:
            for p in pipes:
                p.close_session("a")
        ids = [s for s in ("a", "b") if s in pipes[0]._sessions]
        batch = [(s, rng.integers(0, 256, (144, 256, 3), dtype=np.uint8)) for s in ids]
        eager, graphed = (p.step(batch) for p in pipes)
        for e, g in zip(eager, graphed):
            assert isinstance(g, np.ndarray), g
            assert np.abs(e.astype(int) - g.astype(int)).max() <= 3
    graphs = pipes[1]._groups[(256, 144)].graphs
    assert pipes[1].cuda_graphs and sorted(graphs.batch_sizes()) == [1, 2] and graphs.captures == 2
    assert not pipes[1]._runners  # every session sat in a lane: no per-group graphs


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_lane_graphs_replay_any_sessions(backend):
    """One graph per batch size serves any sessions of the pool, in any order, as eager steps do;
    a replayed lane step never syncs."""
    from morphcam.model.cache_batch import LanePool
    from morphcam.model.cuda_graph import LaneGraphs

    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=2, window_frames=2)
    model = randomized(cfg).to("cuda", torch.bfloat16)
    gen = StreamGenerator(model, TextEncoder(cfg.text_tokens, torch.device("cuda"), torch.bfloat16))
    pool = LanePool(cfg, cfg.latent_size(256, 144), 4, "cuda", torch.bfloat16)
    lanes = [pool.acquire() for _ in range(4)]
    own = [gen.open_session(256, 144, "pencil sketch", seed=i) for i in range(4)]
    laned = [gen.open_session(256, 144, "pencil sketch", seed=i, cache=c) for i, (_, c) in enumerate(lanes)]
    graphs = LaneGraphs(gen, pool, 256, 144)
    order = [[0], [1, 2], [3, 1, 0], [2], [0, 1, 2, 3], [2, 0], [1], [3, 2, 1, 0], [0, 3]]
    with dispatch.force(backend):
        for step, idx in enumerate(order):
            frames = torch.rand(len(idx), 1, 3, 144, 256, device="cuda") * 2 - 1
            want = gen.step([own[i] for i in idx], frames)
            if step == len(order) - 1:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                got = graphs.step([laned[i] for i in idx], [lanes[i][0] for i in idx], frames)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert graphs.capture_error is None
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert sorted(graphs.batch_sizes()) == [1, 2, 3, 4] and graphs.captures == 4
    for a, b in zip(own, laned):
        assert a.cache.frames_seen == b.cache.frames_seen == int(b.cache.pos)
