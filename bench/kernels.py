"""Fused kernels and CUDA graphs against eager PyTorch and torch.compile, in one run on one GPU.

Per frame (batch 1, one session, tensors already on the device: encode + every Euler step +
decode, synchronised after each frame), for each preset and size:

  eager          the torch path, eager (the daemon before kernels/)
  triton         the Triton kernels, eager launches
  torch+graph    the torch path replayed as one CUDA graph (CudaGraphRunner)
  triton+graph   the Triton kernels replayed as one CUDA graph (what the daemon runs)
  compile        torch.compile(StreamGenerator.forward, mode="max-autotune-no-cudagraphs")
  compile+ourgraph  that compiled forward replayed as one CUDA graph by CudaGraphRunner
  compile+graph  torch.compile(..., mode=--graph-mode, default "max-autotune": inductor's CUDA graphs;
                 inductor skips graphs where the step mutates inputs (the KV caches), and says so)

Then, per kernel, a micro-benchmark against its torch reference (triton.testing.do_bench,
median) with achieved GB/s against the copy bandwidth measured in the same run. The compile
arms run last, for the first preset/size only unless --compile-all (compiles take minutes),
and none starts once the run is --budget-s old. Any arm that fails prints its error and the
run goes on. Timings use CUDA events; inputs are fresh random
frames; weights are random (speed does not depend on them).

    python bench/kernels.py                    # tiny 256x144 and 512x288, small 512x288; ~4-5 min on an H200
    python bench/kernels.py --compile-all --out results.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback

import torch

from morphcam.kernels import dispatch


def _percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def time_frames(step, frames: list[torch.Tensor], warmup: int, timed: int) -> dict:
    """Per-frame latency with CUDA events, synchronised after every frame (a live stream's view)."""
    for i in range(warmup):
        step(frames[i % len(frames)])
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for i in range(timed):
        start.record()
        step(frames[i % len(frames)])
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    ms.sort()
    return {"p50_ms": statistics.median(ms), "p99_ms": _percentile(ms, 0.99), "fps": 1000.0 * len(ms) / sum(ms)}


class Setup:
    """One preset at one size on the GPU: a generator and fresh random frames."""

    def __init__(self, preset: str, width: int, height: int, text, dtype: torch.dtype) -> None:
        from morphcam.model.config import ModelConfig
        from morphcam.model.generator import StreamGenerator
        from morphcam.model.network import RestyleModel

        self.preset, self.width, self.height = preset, width, height
        torch.manual_seed(0)
        model = RestyleModel(ModelConfig.from_name(preset)).to("cuda", dtype)
        self.gen = StreamGenerator(model, text)
        g = torch.Generator(device="cuda").manual_seed(1)
        self.compiled = None  # the "compile" arm's function, reused by "compile+ourgraph"
        self.frames = [torch.rand(1, 1, 3, height, width, device="cuda", generator=g) * 2 - 1 for _ in range(8)]

    def session(self):
        return self.gen.open_session(self.width, self.height, "pencil sketch", seed=0)


def arm_eager(setup: Setup, backend: str):
    s = setup.session()

    def step(f):
        with dispatch.force(backend):
            return setup.gen.step([s], f)

    return step


def arm_graph(setup: Setup, backend: str):
    from morphcam.model.cuda_graph import CudaGraphRunner

    runner = CudaGraphRunner(setup.gen, [setup.session()], setup.width, setup.height)
    with dispatch.force(backend):
        runner.step(setup.frames[0])  # eager warm-up frame, then capture
    if runner.capture_error is not None:
        raise runner.capture_error

    return runner.step


def arm_compiled_graph(setup: Setup):
    """The max-autotune-no-cudagraphs forward of the "compile" arm, captured by CudaGraphRunner."""
    from morphcam.model.cuda_graph import CudaGraphRunner

    forward = setup.compiled or torch.compile(setup.gen.forward, mode="max-autotune-no-cudagraphs")
    runner = CudaGraphRunner(setup.gen, [setup.session()], setup.width, setup.height, forward=forward)
    for f in setup.frames[:2]:  # compiles (if needed) on the eager frame, then captures
        runner.step(f)
    if runner.capture_error is not None:
        raise runner.capture_error
    return runner.step


def arm_compile(setup: Setup, mode: str):
    gen, s = setup.gen, setup.session()
    forward = torch.compile(gen.forward, mode=mode)
    if mode == "max-autotune-no-cudagraphs":
        setup.compiled = forward
    inputs = gen.new_inputs(1, setup.width, setup.height)

    def step(f):
        gen.prepare([s], f, into=inputs)
        out = forward([s], inputs)
        gen.finish([s])
        return out

    t0 = time.perf_counter()
    for f in setup.frames[:3]:  # compile, then the CUDA-graph recording runs of inductor
        step(f)
    torch.cuda.synchronize()
    print(f"    compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    return step


def run_arms(setup: Setup, arms: list[str], args, t_start: float | None = None) -> list[dict]:
    rows = []
    for arm in arms:
        label = f"{setup.preset} {setup.width}x{setup.height} {arm}"
        if t_start is not None and time.perf_counter() - t_start > args.budget_s:
            print(f"  {label}: skipped, the run is past --budget-s {args.budget_s:.0f}", flush=True)
            continue
        print(f"  {label} ...", flush=True)
        try:
            if arm in ("eager", "triton"):
                step = arm_eager(setup, "torch" if arm == "eager" else "triton")
            elif arm in ("torch+graph", "triton+graph"):
                step = arm_graph(setup, arm.split("+")[0])
            elif arm == "compile":
                step = arm_compile(setup, "max-autotune-no-cudagraphs")
            elif arm == "compile+ourgraph":
                step = arm_compiled_graph(setup)
            else:
                from torch._dynamo.utils import counters

                torch._dynamo.reset()  # a fresh compile in the graphed mode (caches on disk make it quicker)

                before = counters["inductor"]["cudagraph_skips"]
                step = arm_compile(setup, args.graph_mode)
                if counters["inductor"]["cudagraph_skips"] > before:
                    print("    note: inductor skipped CUDA graphs for part of the step (mutated cache inputs)")
            r = time_frames(step, setup.frames, args.warmup, args.frames)
        except Exception as exc:  # one failing arm must not stop the others
            print(f"    FAILED: {type(exc).__name__}: {exc}".splitlines()[0][:400], flush=True)
            traceback.print_exc(limit=3)
            r = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        rows.append({"preset": setup.preset, "size": f"{setup.width}x{setup.height}", "arm": arm, **r})
        if "p50_ms" in r:
            print(f"    p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  {r['fps']:.0f} fps", flush=True)
    return rows


# ---- per-kernel micro-benchmarks ---------------------------------------------------------------
def _bench_ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def _rotating(make, n: int = 4):
    """n independent input sets, cycled per call, so repeated runs do not all hit in L2."""
    sets = [make() for _ in range(n)]
    state = {"i": 0}

    def next_set():
        state["i"] = (state["i"] + 1) % n
        return sets[state["i"]]

    return next_set


def _kernel_cases(dtype):
    """(name, shape note, fused, reference, make-inputs, bytes moved, flops)."""
    from morphcam.kernels import gated_residual as gr
    from morphcam.kernels import gelu as ge
    from morphcam.kernels import layer_norm_modulate as ln
    from morphcam.kernels import qk_norm_rope as qk
    from morphcam.kernels import ring_attention as ra
    from morphcam.kernels.ring import RingSlots, RingView

    dev, e = "cuda", torch.tensor([], dtype=dtype).element_size()
    cases = []
    for rows, note in ((576, "small 512x288, one frame"), (65536, "65536 rows")):
        d = 512

        def rowwise(rows=rows, d=d):
            x = torch.randn(1, 1, rows, d, device=dev, dtype=dtype)
            mod = torch.randn(1, 1, 6, d, device=dev, dtype=dtype).unsqueeze(3).unbind(2)
            return x, torch.randn_like(x), mod

        cases.append(("layer_norm_modulate", f"{note}, D={d}", ln.layer_norm_modulate, ln.layer_norm_modulate_ref,
                      _rotating(lambda: (lambda x, y, m: (x, m[0], m[1], 1e-6))(*rowwise())), 2 * rows * d * e, 0))
        cases.append(("gated_residual", f"{note}, D={d}", gr.gated_residual, gr.gated_residual_ref,
                      _rotating(lambda: (lambda x, y, m: (x, y, m[2]))(*rowwise())), 3 * rows * d * e, 0))
        cases.append(("gelu", f"{note}, FFN=2048", ge.gelu, ge.gelu_ref,
                      _rotating(lambda rows=rows: (torch.randn(rows, 2048, device=dev, dtype=dtype),)),
                      2 * rows * 2048 * e, 0))
    h, n, dh, slots = 8, 576, 64, 8  # small at 512x288: 1 sink + 6 window + 1 current

    def qk_inputs():
        qkv = torch.randn(1, n, 3, h, dh, device=dev, dtype=dtype)
        q, k, v = [t.transpose(1, 2) for t in qkv.unbind(2)]
        w = torch.randn(dh, device=dev, dtype=dtype)
        cos, sin = torch.randn(2, n, dh // 2, device=dev, dtype=dtype).unbind(0)
        ring = RingSlots(torch.randn(h, slots * n, dh, device=dev, dtype=dtype),
                         torch.randn(h, slots * n, dh, device=dev, dtype=dtype),
                         torch.tensor([3], device=dev), n)
        return q, k, v, w, w, cos, sin, 1e-6, [ring]

    cases.append(("qk_norm_rope", "small 512x288, + ring write", qk.qk_norm_rope, qk.qk_norm_rope_ref,
                  _rotating(qk_inputs), 6 * n * h * dh * e, 0))

    def attn_inputs():
        valid = torch.ones(slots, n, device=dev, dtype=torch.bool)
        ring = RingView(torch.randn(h, slots * n, dh, device=dev, dtype=dtype),
                        torch.randn(h, slots * n, dh, device=dev, dtype=dtype),
                        torch.randint(0, 16, (slots,), device=dev), valid,
                        torch.randn(16, h, dh, device=dev, dtype=dtype))
        return torch.randn(h, n, dh, device=dev, dtype=dtype), ring

    cases.append(("ring_attention", f"small 512x288, {slots} slots", ra.ring_attention, ra.ring_attention_ref,
                  _rotating(attn_inputs), (2 * n + 2 * slots * n) * h * dh * e, 4 * n * slots * n * dh * h))
    return cases


def run_micro(dtype) -> list[dict]:
    """Each kernel against its torch reference; GB/s against a device-to-device copy's."""
    src = torch.randn(256 * 2**20, device="cuda", dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    copy_ms = _bench_ms(lambda: dst.copy_(src))
    ceiling = 2 * src.numel() * 4 / copy_ms / 1e6  # GB/s, bytes read + bytes written
    del src, dst
    print(f"\ncopy bandwidth ceiling: {ceiling:.0f} GB/s (1 GiB device-to-device copy)")
    out = []
    for name, note, fused, ref, inputs, nbytes, flops in _kernel_cases(dtype):
        row = {"kernel": name, "shape": note, "bytes": nbytes}
        try:
            for label, fn in (("triton", fused), ("torch", ref)):
                ms = _bench_ms(lambda fn=fn: fn(*inputs()))
                row[f"{label}_us"] = ms * 1e3
                row[f"{label}_GBs"] = nbytes / ms / 1e6
                if flops:
                    row[f"{label}_TFLOPs"] = flops / ms / 1e9
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        out.append(row)
    print("| kernel | shape | triton us | torch us | speedup | triton GB/s | % of copy | torch GB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        if "error" in r:
            print(f"| {r['kernel']} | {r['shape']} | failed: {r['error'][:80]} |")
            continue
        extra = f" ({r['triton_TFLOPs']:.1f} TFLOP/s)" if "triton_TFLOPs" in r else ""
        print(f"| {r['kernel']} | {r['shape']} | {r['triton_us']:.1f}{extra} | {r['torch_us']:.1f} | "
              f"{r['torch_us'] / r['triton_us']:.2f}x | {r['triton_GBs']:.0f} | {100 * r['triton_GBs'] / ceiling:.0f}% "
              f"| {r['torch_GBs']:.0f} |")
    for r in out:
        r["copy_GBs"] = ceiling
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="tiny:256x144,tiny:512x288,small:512x288", help="preset:WxH,...")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--frames", type=int, default=200, help="timed frames per arm")
    ap.add_argument("--warmup", type=int, default=20, help="untimed frames per arm first")
    ap.add_argument("--compile-all", action="store_true", help="compile arms for every case, not only the first")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile arms")
    ap.add_argument("--graph-mode", default="max-autotune", help="torch.compile mode of the graphed arm")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no compile arm once the run is this many seconds old")
    ap.add_argument("--no-micro", action="store_true", help="skip the per-kernel micro-benchmarks")
    ap.add_argument("--out", help="write every number as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/kernels.py needs a CUDA GPU")
    t_start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  dtype {args.dtype}", flush=True)

    from morphcam.model.text import TextEncoder

    text = TextEncoder(32, torch.device("cuda"), dtype)
    cases = []
    for case in args.cases.split(","):
        preset, _, size = case.partition(":")
        w, _, h = size.partition("x")
        cases.append((preset, int(w), int(h)))
    # The quick arms for every case first, so their numbers exist even if a compile runs long.
    rows = []
    for preset, w, h in cases:
        setup = Setup(preset, w, h, text, dtype)
        rows += run_arms(setup, ["eager", "triton", "torch+graph", "triton+graph"], args)
        del setup
        torch.cuda.empty_cache()
    # Kernels next (half a minute); the compiles, which can run long, last.
    micro = []
    if not args.no_micro:
        micro = run_micro(dtype)

    if not args.no_compile:
        for preset, w, h in cases if args.compile_all else cases[:1]:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"  (compile arms skipped for {preset} {w}x{h}: the run is past --budget-s {args.budget_s:.0f})")
                continue
            setup = Setup(preset, w, h, text, dtype)
            rows += run_arms(setup, ["compile", "compile+ourgraph", "compile+graph"], args, t_start)
            torch._dynamo.reset()
            del setup
            torch.cuda.empty_cache()

    print(f"\nper frame, batch 1, {args.dtype}, {torch.cuda.get_device_name()}:")
    print("| preset | size | arm | p50 ms | p99 ms | fps | eager/arm (p50) |")
    print("|---|---|---|---|---|---|---|")
    eager = {(r["preset"], r["size"]): r.get("p50_ms") for r in rows if r["arm"] == "eager"}
    for r in rows:
        if "p50_ms" not in r:
            print(f"| {r['preset']} | {r['size']} | {r['arm']} | failed | | | {r['error'][:60]} |")
            continue
        base = eager.get((r["preset"], r["size"]))
        ratio = f"{base / r['p50_ms']:.2f}x" if base else "-"
        print(f"| {r['preset']} | {r['size']} | {r['arm']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['fps']:.0f} | {ratio} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "dtype": args.dtype, "frames": rows, "kernels": micro}, f, indent=1)


if __name__ == "__main__":
    main()
