"""Helpers shared by the GPU benchmarks (bench/kernels.py, bench/longlive_shape.py, bench/daemon_step.py).

Timing with CUDA events, the hardware ceilings measured in the same run (a large bf16 matmul's
TFLOP/s, a 1 GiB device-to-device copy's GB/s), FLOPs and bytes counted per step for the
roofline, and the step as a plain function that torch.compile can trace.
"""
from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def time_calls(fn: Callable[[int], object], warmup: int, timed: int) -> dict:
    """Per-call latency with CUDA events, synchronised after every call (a live stream's view).
    ``fn(i)`` runs call i. Returns p50_ms, p99_ms, mean_ms."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for i in range(timed):
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    ms.sort()
    return {"p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 0.99), "mean_ms": sum(ms) / len(ms)}


def bench_ms(fn: Callable[[], object], warmup: int = 25, rep: int = 100) -> float:
    """Median ms of ``fn`` (triton.testing.do_bench: flushes L2 between runs)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def measure_ceilings(dtype: torch.dtype = torch.bfloat16) -> dict:
    """What this GPU reaches here and now: ``matmul_TFLOPs`` (8192^3 matmul in ``dtype``) and
    ``copy_GBs`` (a 1 GiB device-to-device copy, bytes read plus written)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    mm_ms = bench_ms(lambda: a @ b)
    del a, b
    src = torch.randn(256 * 2**20, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = bench_ms(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return {"matmul_TFLOPs": 2 * 8192**3 / mm_ms / 1e9, "copy_GBs": 2 * 256 * 2**20 * 4 / copy_ms / 1e6}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls and attentions ``fn`` runs (torch.utils.flop_counter; run it on the
    torch path: Triton kernels are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_bytes(model: torch.nn.Module, caches: Sequence, dit_forwards: int, frame_bytes: int) -> int:
    """A floor on the bytes a step must move: every DiT weight and every cached K/V read once per
    DiT forward, the autoencoder's weights once, the frames in and out. (Activations are left out:
    at these sizes they are small next to the weights and the caches.)"""
    def nbytes(params) -> int:
        return sum(p.numel() * p.element_size() for p in params)

    kv = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in caches)
    return dit_forwards * (nbytes(model.dit.parameters()) + kv) + nbytes(model.autoencoder.parameters()) + frame_bytes


def roofline_ms(flops: int, nbytes: int, ceilings: dict) -> float:
    """The least time the step can take on this GPU: the larger of its FLOPs at the matmul ceiling
    and its bytes at the copy ceiling."""
    return max(flops / (ceilings["matmul_TFLOPs"] * 1e9), nbytes / (ceilings["copy_GBs"] * 1e6))


def plain_forward(gen, caches_for: Callable | None = None) -> Callable:
    """``gen.forward`` without its ``torch.inference_mode`` (torch.compile cannot trace in-place
    writes under inference mode: "Cannot set version_counter for inference tensor"); call it under
    ``torch.no_grad()``. ``caches_for(sessions, inputs)`` picks the batch's caches (default: the
    sessions' own)."""
    from morphcam.model.cache_batch import SessionCaches
    from morphcam.model.generator import StreamGenerator

    denoise = StreamGenerator.denoise.__wrapped__
    cfg, ae = gen.config, gen.model.autoencoder

    def forward(sessions, inputs):
        b, f = len(sessions), cfg.frames_per_step
        caches = caches_for(sessions, inputs) if caches_for else SessionCaches([s.cache for s in sessions])
        z = ae.encode(inputs.frames.flatten(0, 1)).unflatten(0, (b, f))
        x = denoise(gen, z, inputs, caches)
        return ae.decode(x.flatten(0, 1)).unflatten(0, (b, f))

    return forward


class SplitCaches:
    """The sessions' own caches with every cache write and the ring attention kept out of
    torch.compile (``torch.compiler.disable``): the compiled regions are the pure compute between
    attentions, and the same ops run as in the whole-forward compile. For PyTorch versions whose
    inductor cannot take the in-place cache writes."""

    def __init__(self, caches) -> None:
        from morphcam.model.cache_batch import SessionCaches

        self._inner = SessionCaches(caches)
        self.caches = list(caches)
        self.begin_chunk = torch.compiler.disable(self._inner.begin_chunk)
        self.store_inputs = torch.compiler.disable(self._inner.store_inputs)
        self.commit_device = torch.compiler.disable(self._inner.commit_device)

    def context(self) -> "SplitContext":
        return SplitContext(self.caches)


class SplitContext:
    """Stream attention with the chunk's K/V written by ``attend`` (outside the compiled graph)."""

    def __init__(self, caches) -> None:
        self.caches = caches

    def ring_slots(self, layer):
        return None

    @torch.compiler.disable
    def attend(self, layer, q, k, v, frame_emb):
        from morphcam.kernels import dispatch
        from morphcam.model import ops
        from morphcam.model.attention import empty_token_major

        out = empty_token_major(q)  # the block's reshape after attention is then a view
        with dispatch.force("torch"):  # outside the compiled graph, but still the torch path
            for b, cache in enumerate(self.caches):
                cache.write_kv(layer, k[b], v[b])
                out[b] = ops.ring_attention(q[b], cache.ring_view(layer, frame_emb))
        return out
