"""`wan-1.3b-shape` with LongLive's settings: DiT-only video frames per second, in bf16.

LongLive's inference on Wan2.1-1.3B shapes: 832x480 (1560 tokens per latent frame), chunks of 3
latent frames, 4 denoising steps plus one cache-refresh pass at noise level 0 (5 DiT forwards per
chunk), attention over 12 latent frames in total (3 pinned sink frames, a window of 6, the chunk's
own 3), prompts of 512 text tokens. Weights are random. DiT-only fps as LongLive counts it: 4 video
frames per latent frame, so 12 video frames per chunk over the chunk's DiT time (no VAE, no text
encoder). A steady chunk (the window full) is timed, synchronised after each chunk.

Arms (all with the same attention, chosen first; every arm does the same work per chunk):
  eager          the torch path
  graph          the torch path, the whole chunk replayed as one CUDA graph
  triton+graph   the Triton kernels (norms, modulation, QK-norm + RoPE + ring write, residuals)
                 with the chosen attention, the FFN's GELU in cuBLASLt's GEMM epilogue, as one graph
  triton+graph, GELU kernel
                 the same with the FFN's GELU as a separate Triton kernel after its GEMM
  triton+graph, FP8 linears
                 (where FP8 tensor cores exist; --no-fp8 skips it) triton+graph with every block
                 linear but the prompt's K/V on FP8 tensor cores (morphcam.model.fp8), the FFN's
                 GELU in the quantization of its second GEMM's input; printed with the output's
                 relative difference from the bf16 model's, chunk by chunk
  compile+graph  (--compile; takes minutes) torch.compile(max-autotune-no-cudagraphs) of the chunk
                 with the cache writes and the attention outside the compiled regions, as one graph

Attention: the steady chunk's attention (4680 queries x 18720 keys x 12 heads x 128) is timed on
SDPA's cuDNN, FLASH and memory-efficient backends and on our Triton ring kernel (keys read in the
ring layout with the sink in place); the fastest is used for every arm. SDPA needs the per-frame
key offsets added to the cached keys first (one copy of the keys per layer and forward); the ring
kernel adds them on the fly. A torch.profiler pass per graphed arm (but the compiled one) splits
the chunk's GPU time into attention, GEMMs and the rest, and lists the 15 kernels of the rest that
take the most time.
The share of LongLive's bf16 ceiling (67.9 fps at 801 TFLOP/s, measured on an H100 for 141.5 TFLOP
per chunk) is printed beside our own: FLOPs counted per chunk against the matmul ceiling measured
in this run.

    python bench/longlive_shape.py --out longlive.json            # about a minute on an H100
    python bench/longlive_shape.py --compile --out longlive.json  # plus several minutes of compiling
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
import torch.nn.functional as F

from benchlib import bench_ms, count_flops, measure_ceilings, time_calls
from morphcam.kernels import dispatch
from morphcam.model.attention import StreamContext, empty_token_major
from morphcam.model.cache_batch import SessionCaches
from morphcam.model.config import ModelConfig
from morphcam.model.fp8 import fp8_supported, to_fp8

# LongLive's inference settings, as ModelConfig fields.
LONGLIVE = dict(frames_per_step=3, sink_frames=3, window_frames=6, text_tokens=512, cache_refresh=True,
                sigmas=(1.0, 0.75, 0.5, 0.25))
VIDEO_FRAMES_PER_LATENT = 4  # Wan's VAE: 4 video frames per latent frame
LONGLIVE_CEILING_FPS = 67.9  # the bf16 ceiling for this work on an H100
SDPA_BACKENDS = ("cudnn", "flash", "efficient")
FP8_ARM = "triton+graph, FP8 linears"


def longlive_config(preset: str = "wan-1.3b-shape", **overrides) -> ModelConfig:
    """The preset with LongLive's settings (and ``overrides``, for tests at tiny sizes)."""
    return dataclasses.replace(ModelConfig.from_name(preset), **{**LONGLIVE, **overrides})


def _sdpa_backends(name: str):
    from torch.nn.attention import SDPBackend

    return {"cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION],
            "efficient": [SDPBackend.EFFICIENT_ATTENTION], "math": [SDPBackend.MATH]}[name]


class ChosenAttention(StreamContext):
    """Stream attention through one chosen kernel: an SDPA backend ("cudnn", "flash", "efficient",
    "math") or "ring" (``ops.ring_attention``: our Triton kernel on the Triton path).

    SDPA runs without a mask once every slot of the cache holds a frame (the host knows from
    ``frames_seen``; from then on the mask is all true), so the fused backends take it. With
    ``write_in_attend`` the chunk's K/V are written here instead of by QK-norm/RoPE, so that a
    compiled step can keep this whole method out of its graph."""

    def __init__(self, caches, attention: str, write_in_attend: bool = False) -> None:
        super().__init__(caches)
        self.attention, self.write_in_attend = attention, write_in_attend
        if write_in_attend:  # the writes and the attention stay out of a compiled graph
            self.attend = torch.compiler.disable(self._attend)
        else:
            self.attend = self._attend

    def ring_slots(self, layer):
        return None if self.write_in_attend else super().ring_slots(layer)

    def _attend(self, layer, q, k, v, frame_emb):
        if self.write_in_attend:
            for b, cache in enumerate(self.caches):
                cache.write_kv(layer, k[b], v[b])
        if self.attention == "ring":
            return super().attend(layer, q, k, v, frame_emb)
        from torch.nn.attention import sdpa_kernel

        def one(b, cache):
            keys, values = cache.keys_values(layer, frame_emb)
            cfg = cache.config
            if cache.frames_seen >= cfg.sink_frames + cfg.window_frames:  # every slot valid: no mask
                with sdpa_kernel(_sdpa_backends(self.attention)):
                    return F.scaled_dot_product_attention(q[b][None], keys[None], values[None])
            mask = cache.key_mask()[None]  # the first chunks (warm-up): any backend that takes the mask
            return F.scaled_dot_product_attention(q[b][None], keys[None], values[None], attn_mask=mask)

        # One cache: SDPA's output as it is (cuDNN and FLASH allocate it in q's layout, token-major
        # from the Triton QK-norm/RoPE, so the block's reshape after attention is a view).
        if len(self.caches) == 1:
            return one(0, self.caches[0])
        out = empty_token_major(q)
        for b, cache in enumerate(self.caches):
            out[b] = one(b, cache)[0]
        return out


class ChosenCaches(SessionCaches):
    """The session's cache with ``ChosenAttention``; with ``write_in_attend`` every cache write is
    kept out of a compiled graph."""

    def __init__(self, caches, attention: str, write_in_attend: bool = False) -> None:
        super().__init__(caches)
        self.attention, self.write_in_attend = attention, write_in_attend
        if write_in_attend:
            for name in ("begin_chunk", "store_inputs", "commit_device"):
                setattr(self, name, torch.compiler.disable(getattr(super(), name)))

    def context(self) -> ChosenAttention:
        return ChosenAttention(self.caches, self.attention, self.write_in_attend)


class Chunk:
    """One session generating chunks DiT-only: per chunk the host half (``prepare``: noise, strength,
    prompt), ``StreamGenerator.denoise`` on fixed input latents, and ``finish``."""

    def __init__(self, gen, attention: str, width: int, height: int, seed: int = 0) -> None:
        cfg = gen.config
        self.gen, self.attention = gen, attention
        self.session = gen.open_session(width, height, "a watercolor painting of a city street", seed=seed)
        self.inputs = gen.new_inputs(1, width, height)
        g = torch.Generator(device=gen.device).manual_seed(seed)
        h, w = cfg.latent_size(width, height)
        self.z = torch.randn(1, cfg.frames_per_step, cfg.latent_channels, h, w, device=gen.device, generator=g,
                             dtype=gen.dtype)
        self.frames = torch.zeros(1, cfg.frames_per_step, 3, height, width, device=gen.device, dtype=gen.dtype)
        self.denoise = lambda inputs, caches: gen.denoise(self.z, inputs, caches)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.write_in_attend = False

    def caches(self) -> ChosenCaches:
        return ChosenCaches([self.session.cache], self.attention, self.write_in_attend)

    def run(self) -> torch.Tensor:
        """One chunk. Returns its clean latents (1, F, C, h, w)."""
        gen, s = self.gen, self.session
        gen.prepare([s], self.frames, into=self.inputs)
        if self.graph is not None:
            self.graph.replay()
            out = self.output
        else:
            out = self.denoise(self.inputs, self.caches())
        gen.finish([s])
        return out

    def capture(self) -> None:
        """Record the chunk as one CUDA graph (run chunks eagerly first: warm-up, window full)."""
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self.output = self.denoise(self.inputs, self.caches())
        self.graph = graph


def pick_attention(cfg: ModelConfig, width: int, height: int, dtype: torch.dtype, device: str) -> tuple[str, list[dict]]:
    """Time the steady chunk's attention on every candidate; returns the fastest and the rows."""
    from morphcam.kernels.ring import RingView
    from morphcam.kernels.ring_attention import ring_attention

    n = cfg.tokens_per_frame(width, height)
    h, dh, slots, lq = cfg.n_heads, cfg.head_dim, cfg.cache_frames, cfg.frames_per_step * n
    q = torch.randn(h, lq, dh, device=device, dtype=dtype)
    k = torch.randn(h, slots * n, dh, device=device, dtype=dtype)
    v = torch.randn_like(k)
    emb = torch.randn(cfg.frame_positions, h, dh, device=device, dtype=dtype) * 0.02
    ring = RingView(k, v, torch.arange(slots, device=device), torch.ones(slots, n, device=device, dtype=torch.bool), emb)
    flops = 4 * h * lq * slots * n * dh
    rows = []

    def sdpa(name):
        keys = (k.unflatten(1, (slots, n)) + emb[ring.frame_idx].transpose(0, 1)[:, :, None]).flatten(1, 2)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(_sdpa_backends(name)):
            return F.scaled_dot_product_attention(q[None], keys[None], v[None])

    for name in (*SDPA_BACKENDS, "ring"):
        fn = (lambda: ring_attention(q, ring)) if name == "ring" else (lambda name=name: sdpa(name))
        try:
            ms = bench_ms(fn, warmup=5, rep=30)
            rows.append({"attention": name, "ms": ms, "TFLOPs": flops / ms / 1e9})
        except Exception as exc:  # a backend this build or shape does not support
            rows.append({"attention": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    timed = [r for r in rows if "ms" in r]
    return min(timed, key=lambda r: r["ms"])["attention"], rows


ATTENTION_KERNELS = ("attention", "fmha", "flash", "cudnn", "sdpa", "_ring_attention")
GEMM_KERNELS = ("gemm", "xmma", "cutlass", "nvjet", "matmul", "sm90_", "cublas")


def kernel_kind(name: str) -> str:
    """A kernel's kind from its name: "attention", "gemm" or "other"."""
    name = name.lower()
    if any(t in name for t in ATTENTION_KERNELS):
        return "attention"
    return "gemm" if any(t in name for t in GEMM_KERNELS) else "other"


def short_kernel_name(name: str, width: int = 110) -> str:
    """A kernel's name without ``void `` and PyTorch's namespaces, cut to ``width`` characters:
    the operation of ``at::native``'s generic elementwise kernels (``CUDAFunctor_add``,
    ``direct_copy_kernel_cuda``, ...) sits past the first 90 characters of the full name."""
    for noise in ("void ", "at::native::", "(anonymous namespace)::"):
        name = name.replace(noise, "")
    return name[:width]


def tally_kernels(kernels, forwards: int, top: int = 15) -> tuple[dict, list[dict]]:
    """``kernels``: (name, GPU microseconds in all, calls) per kernel name, over ``forwards`` DiT
    forwards. Returns ms per forward by kind, and the ``top`` "other" kernels by GPU time: name
    (``short_kernel_name``), microseconds and calls per forward."""
    split, other = {"attention": 0.0, "gemm": 0.0, "other": 0.0}, []
    for name, us, calls in kernels:
        kind = kernel_kind(name)
        split[kind] += us / 1e3 / forwards
        if kind == "other":
            other.append({"kernel": short_kernel_name(name), "us_per_forward": us / forwards, "calls_per_forward": calls / forwards})
    return split, sorted(other, key=lambda r: -r["us_per_forward"])[:top]


def profile_split(chunk: Chunk, chunks: int = 2) -> tuple[dict, list[dict]]:
    """GPU time per DiT forward by kind of kernel (attention / GEMM / other), from torch.profiler,
    and the 15 "other" kernels taking the most of it (``tally_kernels``)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(chunks):
            chunk.run()
        torch.cuda.synchronize()
    kernels = [(e.key, _device_us(e), e.count) for e in prof.key_averages()]
    forwards = chunks * (len(chunk.gen.config.sigmas) + int(chunk.gen.config.cache_refresh))
    return tally_kernels([k for k in kernels if k[1]], forwards)


def _device_us(event) -> float:
    us = getattr(event, "self_device_time_total", None)  # older torch: self_cuda_time_total
    return getattr(event, "self_cuda_time_total", 0.0) if us is None else us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="wan-1.3b-shape")
    ap.add_argument("--chunks", type=int, default=8, help="timed chunks per arm")
    ap.add_argument("--warmup", type=int, default=4, help="chunks first (3 fill the window)")
    ap.add_argument("--attention", choices=(*SDPA_BACKENDS, "ring", "auto"), default="auto",
                    help="attention of every arm; auto: the fastest on the steady shape, measured first")
    ap.add_argument("--compile", action="store_true", help="also the torch.compile arm (minutes)")
    ap.add_argument("--no-fp8", action="store_true", help="skip the FP8-linears arm (it runs where FP8 tensor cores exist)")
    ap.add_argument("--out", help="write every number as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/longlive_shape.py needs a CUDA GPU")
    t0 = time.perf_counter()
    dtype, dev = torch.bfloat16, "cuda"
    cfg = longlive_config(args.preset)
    width, height = cfg.width, cfg.height
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  {cfg.name} {width}x{height}, "
          f"{cfg.tokens_per_frame()} tokens/latent frame, {cfg.frames_per_step} per chunk, {len(cfg.sigmas)} steps "
          f"+ refresh, {cfg.cache_frames} frames attended ({cfg.sink_frames} sinks), text {cfg.text_tokens}", flush=True)
    ceilings = measure_ceilings(dtype)
    print(f"ceilings: matmul {ceilings['matmul_TFLOPs']:.0f} TFLOP/s, copy {ceilings['copy_GBs']:.0f} GB/s", flush=True)

    attention, attention_rows = pick_attention(cfg, width, height, dtype, dev)
    for r in attention_rows:
        print(f"  attention {r['attention']}: " + (f"{r['ms']:.2f} ms, {r['TFLOPs']:.0f} TFLOP/s" if "ms" in r else r["error"]))
    if args.attention != "auto":
        attention = args.attention
    print(f"attention for every arm: {attention}", flush=True)

    from morphcam.model.generator import StreamGenerator
    from morphcam.model.network import RestyleModel
    from morphcam.model.text import TextEncoder

    torch.manual_seed(0)
    with torch.device(dev):
        model = RestyleModel(cfg)
    model = model.to(dtype).eval().requires_grad_(False)
    gen = StreamGenerator(model, TextEncoder(cfg.text_tokens, torch.device(dev), dtype))
    frames_per_chunk = cfg.frames_per_step * VIDEO_FRAMES_PER_LATENT

    flops_chunk = Chunk(gen, attention, width, height)
    for _ in range(args.warmup):
        flops_chunk.run()
    flops_chunk.attention = "math"  # attention as plain matmuls, which the FLOP counter surely counts
    with dispatch.force("torch"):
        flops = count_flops(flops_chunk.run)
    del flops_chunk
    roof_fps = frames_per_chunk / (flops / (ceilings["matmul_TFLOPs"] * 1e12))
    print(f"{flops / 1e12:.1f} TFLOP per chunk -> {roof_fps:.1f} fps at this run's matmul ceiling", flush=True)

    # (name, kernel backend, CUDA graph, FFN GELU in the GEMM's epilogue)
    arms = [("eager", "torch", False, False), ("graph", "torch", True, False), ("triton+graph", "triton", True, True),
            ("triton+graph, GELU kernel", "triton", True, False)]
    if args.compile:
        arms.append(("compile+graph", "torch", True, False))
    fp8 = not args.no_fp8 and fp8_supported(dev)
    if fp8:  # last: it converts the model's block linears in place
        arms.append((FP8_ARM, "triton", True, True))
    rows, splits, top_other, fp8_error = [], {}, {}, None
    for arm, backend, graphed, epilogue in arms:
        print(f"  {arm} ...", flush=True)
        if arm == FP8_ARM:
            fp8_error = convert_to_fp8(gen, attention, width, height)
            print(f"    output against bf16, relative: {fp8_error}", flush=True)
        r = None
        # A graph that cannot be captured with the chosen attention falls back to FLASH.
        for attn in dict.fromkeys((attention, "flash") if graphed else (attention,)):
            chunk = None
            try:
                chunk = Chunk(gen, attn, width, height)
                with dispatch.force(backend), dispatch.gemm_epilogues(epilogue):
                    if arm.startswith("compile"):
                        _compile(chunk)
                    for _ in range(args.warmup):
                        chunk.run()
                    if graphed:
                        chunk.capture()
                    r = time_calls(lambda i: chunk.run(), 2, args.chunks)
                    if graphed and not arm.startswith("compile"):
                        chunk.graph = None  # the profile runs the same kernels eagerly
                        splits[arm], top_other[arm] = profile_split(chunk)
                break
            except Exception as exc:  # one failing arm must not stop the others
                print(f"    FAILED with {attn} attention: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                      flush=True)
                error = f"{type(exc).__name__}: {exc}"[:400]
            finally:
                del chunk
                torch.cuda.empty_cache()
        if r is None:
            rows.append({"arm": arm, "error": error})
            continue
        fps = frames_per_chunk / (r["p50_ms"] / 1e3)
        row = {"arm": arm, "attention": attn, "gelu_epilogue": epilogue, "chunk_p50_ms": r["p50_ms"],
               "chunk_p99_ms": r["p99_ms"], "fps_dit_only": fps,
               "ms_per_forward": r["p50_ms"] / (len(cfg.sigmas) + 1), "share_of_67_9_fps": fps / LONGLIVE_CEILING_FPS,
               "share_of_roofline": fps / roof_fps}
        rows.append(row)
        print(f"    chunk p50 {r['p50_ms']:.1f} ms (p99 {r['p99_ms']:.1f}), {fps:.1f} video fps DiT-only, "
              f"{100 * fps / LONGLIVE_CEILING_FPS:.0f}% of 67.9 fps, {100 * fps / roof_fps:.0f}% of this run's roofline",
              flush=True)
    for arm, split in splits.items():
        total = sum(split.values())
        print(f"GPU time per forward, {arm} kernels (profiled eagerly): " + ", ".join(
            f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in split.items()))
    for arm, top in top_other.items():
        print(f"top {len(top)} 'other' kernels per forward, {arm}:")
        for r in top:
            print(f"  {r['us_per_forward']:8.1f} us {r['calls_per_forward']:6.1f} calls  {r['kernel']}")
    for op, c in dispatch.chosen().items():  # measured choices: ring attention, quantize layouts
        print(f"{op}: {c['choice']} ({', '.join(f'{k} {v:.3f} ms' for k, v in c['ms'].items())})")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "config": dataclasses.asdict(cfg),
                       "ceilings": ceilings, "flops_per_chunk": flops, "roofline_fps": roof_fps,
                       "attention": attention, "attention_candidates": attention_rows, "arms": rows,
                       "fp8_relative_error_per_chunk": fp8_error, "measured_choices": dispatch.chosen(),
                       "ms_per_forward_split": splits, "top_other_kernels": top_other}, f, indent=1)


def convert_to_fp8(gen, attention: str, width: int, height: int, chunks: int = 5) -> list[float]:
    """Swap the model's block linears for FP8 ones (``morphcam.model.fp8.to_fp8``, in place) and
    return, per chunk of one session from the same inputs, the relative difference of the clean
    latents from the bf16 model's: the price of FP8 in output.

    A fresh model's adaLN and output layers are zero (every block starts as the identity and the
    output is zero), which would hide every GEMM's error: they get random weights first (scaled
    by 1/sqrt(fan-in)), for both runs; speed does not depend on the values."""
    dit = gen.model.dit
    with torch.no_grad():
        for lin in (dit.adaln[-1], dit.final_adaln[-1], dit.patch_out):
            torch.nn.init.normal_(lin.weight, std=0.5 / lin.in_features**0.5)
    outs = []
    for convert in (False, True):
        if convert:
            to_fp8(gen.model.dit)
        chunk = Chunk(gen, attention, width, height, seed=11)
        with dispatch.force("triton"):
            outs.append([chunk.run().float().clone() for _ in range(chunks)])
        del chunk
    return [float((b - a).norm() / a.norm()) for a, b in zip(*outs)]


def _compile(chunk: Chunk) -> None:
    """Compile the chunk's denoise (no inference mode; cache writes and attention left outside)."""
    from morphcam.model.generator import StreamGenerator

    chunk.write_in_attend = True
    compiled = torch.compile(StreamGenerator.denoise.__wrapped__, mode="max-autotune-no-cudagraphs")

    def denoise(inputs, caches):
        with torch.no_grad():
            return compiled(chunk.gen, chunk.z, inputs, caches)

    chunk.denoise = denoise
    t0 = time.perf_counter()
    chunk.run()
    torch.cuda.synchronize()
    print(f"    compiled in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
