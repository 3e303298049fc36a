"""GPU only: the mega-kernel with every SM running a program.

- bf16 agreement with the plain model (tiny preset at 256x144, the ring wrapping);
- fp32 with exact dots against the torch interpreter, buffer by buffer, and bitwise the same
  over repeated launches (a missing acquire/release would show up as a race here);
- a captured CUDA graph of the generator's frame with the mega-kernel inside equals eager frames;
- the watchdog: an unsatisfiable wait ends as an error, not a hang, and a later launch (a stale
  graph's) runs in safe mode and still computes the step;
- a long loop with no hang: ``MORPHCAM_MEGAKERNEL_STEPS`` steps (default 2000; the benchmark's
  ``--long-steps 100000`` is the 100,000-step run).
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from morphcam.kernels import dispatch
from morphcam.kernels.megakernel.buffers import epilogue, prologue
from morphcam.kernels.megakernel.diff import diff, random_dit, random_step, small_config
from morphcam.kernels.megakernel.executor import MegakernelError, MegakernelExecutor
from morphcam.kernels.megakernel.program import TARGET0
from morphcam.model.attention import StreamContext
from morphcam.model.config import ModelConfig
from morphcam.model.kv_cache import KVRingCache

pytestmark = pytest.mark.gpu

DEV, BF = "cuda", torch.bfloat16


def _inputs(cfg, gen, dtype=BF):
    latent = cfg.latent_size(cfg.width, cfg.height)
    t = cfg.frames_per_step

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=DEV).to(dtype)

    return (rand(1, t, cfg.latent_channels, *latent), rand(1, t, cfg.latent_channels, *latent),
            torch.rand(1, t, generator=gen, device=DEV).to(dtype), torch.rand(1, t, generator=gen, device=DEV).to(dtype),
            rand(1, cfg.text_dim), rand(1, cfg.text_tokens, cfg.text_dim))


def test_bf16_agrees_with_the_plain_model(rel_error):
    cfg = ModelConfig.from_name("tiny")
    dit = random_dit(cfg, DEV, BF)
    ex = MegakernelExecutor(dit)
    latent = cfg.latent_size(cfg.width, cfg.height)
    caches = [KVRingCache(cfg, latent, DEV, BF) for _ in range(2)]
    gen = torch.Generator(device=DEV).manual_seed(0)
    for step in range(cfg.cache_frames + 3):  # the ring wraps
        args = _inputs(cfg, gen)
        for c in caches:
            c.begin_chunk()
        with torch.inference_mode(), dispatch.force("torch"):
            ref = dit(*args, StreamContext([caches[0]]))
            out = ex.denoise(*args, StreamContext([caches[1]]))
            ex.check()
        for c in caches:
            c.commit()
        assert rel_error(out, ref) < 3e-2, step
        assert rel_error(caches[1].k, caches[0].k) < 3e-2, step


def test_fp32_all_programs_equal_the_interpreter_and_are_deterministic():
    dit = random_dit(small_config(), DEV, torch.float32)
    tri = MegakernelExecutor(dit)
    ref = MegakernelExecutor(dit, backend="interpreter", tiles=tri.tiles)  # the same instruction list
    assert tri.n_programs == torch.cuda.get_device_properties(0).multi_processor_count
    start = random_step(tri)
    rows = diff(ref, tri, start)
    assert all(r["finite"] and r["rel"] < 1e-5 for r in rows), rows
    program, _, counters = tri.plan(start.cos.shape[0])
    outs = []
    for _ in range(20):
        run = start.clone()
        tri.execute(program, run, counters)
        outs.append(run.out.clone())
    tri.check()
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_graphed_frames_with_the_megakernel_equal_eager_ones():
    from morphcam.model.cuda_graph import CudaGraphRunner
    from morphcam.model.generator import StreamGenerator
    from morphcam.model.network import RestyleModel
    from morphcam.model.text import TextEncoder

    cfg = ModelConfig.from_name("tiny")
    torch.manual_seed(0)
    model = RestyleModel(cfg).eval().to(DEV, BF)
    model.dit.load_state_dict(random_dit(cfg, DEV, BF).state_dict())
    gen = StreamGenerator(model, TextEncoder(cfg.text_tokens, torch.device(DEV), BF))
    assert gen.use_executor("megakernel") is None
    eager, graphed = (gen.open_session(256, 144, "pencil sketch", seed=5) for _ in range(2))
    runner = CudaGraphRunner(gen, [graphed], 256, 144)
    for i in range(8):
        frame = torch.rand(1, 1, 3, 144, 256, device=DEV) * 2 - 1
        a = gen.step([eager], frame)
        b = runner.step(frame)
        assert runner.capture_error is None
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-2)
    assert gen.megakernel.failed is None


def test_watchdog_turns_an_unsatisfiable_wait_into_an_error(rel_error):
    cfg = ModelConfig.from_name("tiny")
    dit = random_dit(cfg, DEV, BF)
    ex = MegakernelExecutor(dit, max_spin=20_000)
    latent = cfg.latent_size(cfg.width, cfg.height)
    cache = KVRingCache(cfg, latent, DEV, BF)
    cache.begin_chunk()
    args = _inputs(cfg, torch.Generator(device=DEV).manual_seed(0))
    program, _, _ = ex.plan(cache.tokens_per_frame)
    program.instructions[len(program.instructions) // 2, TARGET0] = 1 << 30  # a wait nothing satisfies
    t0 = time.perf_counter()
    with torch.inference_mode():
        ex.denoise(*args, StreamContext([cache]))
        with pytest.raises(MegakernelError, match="timed out"):
            ex.check()
    assert time.perf_counter() - t0 < 30
    assert not ex.runs(args[0], StreamContext([cache]))  # the next step uses the network
    # A captured graph would still launch the kernel: with the flag set it runs in safe mode (one
    # program, every tile in order), which makes the step the network makes. The graph replays the
    # whole step, prologue included: the failed launch left its residual stream (x, updated in place
    # through layer ~5) in the buffers, and only the prologue resets it.
    with torch.inference_mode():
        ref = dit(*args, StreamContext([cache]))
        _, bufs, counters = ex.plan(cache.tokens_per_frame)
        prologue(dit, bufs, *args)
        ex.execute(program, bufs, counters)
        ex.check()
        out = epilogue(dit, bufs, 1, *args[0].shape[-2:])
    assert rel_error(out, ref) < 3e-2


def test_long_run_never_hangs():
    steps = int(os.environ.get("MORPHCAM_MEGAKERNEL_STEPS", "2000"))
    cfg = ModelConfig.from_name("tiny")
    dit = random_dit(cfg, DEV, BF)
    ex = MegakernelExecutor(dit)
    cache = KVRingCache(cfg, cfg.latent_size(cfg.width, cfg.height), DEV, BF)
    args = _inputs(cfg, torch.Generator(device=DEV).manual_seed(0))
    ctx = StreamContext([cache])
    with torch.inference_mode():
        for _ in range(3):  # compile, then capture one step (begin_chunk, the step, commit)
            cache.begin_chunk()
            ex.denoise(*args, ctx)
            cache.commit_device()
        ex.check()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            cache.begin_chunk()
            out = ex.denoise(*args, ctx)
            cache.commit_device()
        for i in range(steps):
            graph.replay()
            if i % 1000 == 999 or i == steps - 1:
                ex.check()  # bounded wait for the device, and the kernel's error flag
    assert torch.isfinite(out).all()
    assert int(ex.error[3]) >= steps
