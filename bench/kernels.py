"""Fused kernels and CUDA graphs against eager PyTorch and torch.compile, in one run on one GPU.

Per frame (batch 1, one session, tensors already on the device: encode + every Euler step +
decode, synchronised after each frame), for each preset and size:

  eager          the torch path, eager (the daemon before kernels/)
  triton         the Triton kernels, eager launches
  torch+graph    the torch path replayed as one CUDA graph (CudaGraphRunner)
  triton+graph   the Triton kernels replayed as one CUDA graph (what the daemon runs)
  compile        torch.compile of the same step (mode --compile-mode, default max-autotune-no-cudagraphs),
                 traced without inference mode; the cache writes stay in the compiled graph, or, where
                 this PyTorch's inductor cannot take them, run outside it with the ring attention
                 (the "split" variant: the same ops, the compiled regions between attentions)
  compile+graph  that compiled step replayed as one CUDA graph by CudaGraphRunner
  compile+inductorgraph  (--inductor-graphs) torch.compile(mode="max-autotune"): inductor's own CUDA
                 graphs, which it skips where the step mutates inputs (the caches), and says so

Every arm does the same work per frame. For each case the FLOPs (torch.utils.flop_counter on one
eager step) and a floor on the bytes (weights and K/V caches read once per DiT forward) give the
roofline time against ceilings measured in the same run (an 8192^3 bf16 matmul, a 1 GiB copy);
each arm's "roofline" column is that time over its p50. Then, per kernel, a micro-benchmark
against its torch reference. The compile arms run last, for the presets in --compile-presets,
and none starts once the run is --budget-s old. Any arm that fails prints its error and the run
goes on. Weights are random (speed does not depend on them). The Triton arms' ring attention is
whichever of our kernel and offset keys + SDPA measured faster at the shape (``dispatch.fastest``,
timed at the first eager call); the choices and their timings are printed at the end.

    python bench/kernels.py --out results.json      # tiny 256x144 and 512x288, small 512x288; compile on small
"""
from __future__ import annotations

import argparse
import json
import time
import traceback

import torch

from benchlib import (SplitCaches, bench_ms, count_flops, measure_ceilings, plain_forward, roofline_ms, step_bytes,
                      time_calls)
from morphcam.kernels import dispatch


def time_frames(step, frames: list[torch.Tensor], warmup: int, timed: int) -> dict:
    """Per-frame latency with CUDA events, synchronised after every frame (a live stream's view)."""
    r = time_calls(lambda i: step(frames[i % len(frames)]), warmup, timed)
    return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "fps": 1000.0 / r["mean_ms"]}


class Setup:
    """One preset at one size on the GPU: a generator and fresh random frames."""

    def __init__(self, preset: str, width: int, height: int, text, dtype: torch.dtype) -> None:
        from morphcam.model.config import ModelConfig
        from morphcam.model.generator import StreamGenerator
        from morphcam.model.network import RestyleModel

        self.preset, self.width, self.height = preset, width, height
        torch.manual_seed(0)
        model = RestyleModel(ModelConfig.from_name(preset)).to("cuda", dtype).requires_grad_(False)
        self.gen = StreamGenerator(model, text)
        g = torch.Generator(device="cuda").manual_seed(1)
        self.compiled = None  # the "compile" arm's function, reused by "compile+graph"
        self.roof: dict = {}  # flops, bytes and roofline_ms of one frame (Setup.roofline)
        self.compile_variant = ""
        self.compile_session = None  # the session the compiled step was traced with
        self.frames = [torch.rand(1, 1, 3, height, width, device="cuda", generator=g) * 2 - 1 for _ in range(8)]

    def session(self):
        return self.gen.open_session(self.width, self.height, "pencil sketch", seed=0)

    def roofline(self, ceilings: dict) -> dict:
        """FLOPs and the byte floor of one frame, and the least time they take on this GPU."""
        s = self.session()
        with dispatch.force("torch"):
            flops = count_flops(lambda: self.gen.step([s], self.frames[0]))
        cfg = self.gen.config
        forwards = len(cfg.sigmas) + int(cfg.cache_refresh)
        nbytes = step_bytes(self.gen.model, [s.cache], forwards, 2 * self.frames[0].numel() * self.frames[0].element_size())
        return {"flops": flops, "bytes": nbytes, "roofline_ms": roofline_ms(flops, nbytes, ceilings)}


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


def _compile(setup: Setup, mode: str):
    """The step compiled whole; if inductor cannot take the cache writes, compiled with them (and
    the ring attention) outside the graph. Compiles on the first call: returns the callable."""
    gen = setup.gen
    last_error = None
    for variant, caches_for in (("whole", None), ("split", lambda ss, i: SplitCaches([x.cache for x in ss]))):
        torch._dynamo.reset()
        compiled = torch.compile(plain_forward(gen, caches_for), mode=mode)

        def forward(sessions, inputs, compiled=compiled):
            with torch.no_grad():
                return compiled(sessions, inputs)

        s, inputs = setup.session(), gen.new_inputs(1, setup.width, setup.height)
        t0 = time.perf_counter()
        try:
            for f in setup.frames[:2]:  # compile, and a second call to catch recompiles
                gen.prepare([s], f, into=inputs)
                forward([s], inputs)
                gen.finish([s])
            torch.cuda.synchronize()
        except Exception as exc:
            print(f"    compile ({variant}) failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", flush=True)
            last_error = exc
            continue
        print(f"    compiled ({variant}) in {time.perf_counter() - t0:.1f} s", flush=True)
        # The arms go on with the session it was compiled for (no guard on another session can fail).
        setup.compiled, setup.compile_variant, setup.compile_session = forward, variant, s
        return forward
    raise last_error


def arm_compile(setup: Setup, mode: str):
    gen = setup.gen
    forward = setup.compiled or _compile(setup, mode)
    s = setup.compile_session
    inputs = gen.new_inputs(1, setup.width, setup.height)

    def step(f):
        gen.prepare([s], f, into=inputs)
        out = forward([s], inputs)
        gen.finish([s])
        return out

    return step


def arm_compiled_graph(setup: Setup, mode: str):
    """The compiled step of the "compile" arm, captured by CudaGraphRunner."""
    from morphcam.model.cuda_graph import CudaGraphRunner

    forward = setup.compiled or _compile(setup, mode)
    runner = CudaGraphRunner(setup.gen, [setup.compile_session], setup.width, setup.height, forward=forward)
    runner.step(setup.frames[0])  # eager frame, then capture
    if runner.capture_error is not None:
        raise runner.capture_error
    return runner.step


def arm_inductor_graphs(setup: Setup):
    """torch.compile(mode="max-autotune"): inductor's CUDA graphs (skipped where inputs mutate)."""
    from torch._dynamo.utils import counters

    before = counters["inductor"]["cudagraph_skips"]
    setup.compiled = None
    step = arm_compile(setup, "max-autotune")
    for f in setup.frames[:3]:  # inductor records its graphs on the first calls
        step(f)
    if counters["inductor"]["cudagraph_skips"] > before:
        print("    note: inductor skipped CUDA graphs for part of the step (mutated cache inputs)")
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
                step = arm_compile(setup, args.compile_mode)
            elif arm == "compile+graph":
                step = arm_compiled_graph(setup, args.compile_mode)
            else:
                step = arm_inductor_graphs(setup)
            r = time_frames(step, setup.frames, args.warmup, args.frames)
            if arm.startswith("compile"):
                r["compile_variant"] = setup.compile_variant
        except Exception as exc:  # one failing arm must not stop the others
            print(f"    FAILED: {type(exc).__name__}: {exc}".splitlines()[0][:400], flush=True)
            traceback.print_exc(limit=3)
            r = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        if "p50_ms" in r and setup.roof:
            r["roofline_share"] = setup.roof["roofline_ms"] / r["p50_ms"]
        rows.append({"preset": setup.preset, "size": f"{setup.width}x{setup.height}", "arm": arm, **r})
        if "p50_ms" in r:
            share = f"  {100 * r['roofline_share']:.1f}% of roofline" if "roofline_share" in r else ""
            print(f"    p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  {r['fps']:.0f} fps{share}", flush=True)
    return rows


# ---- per-kernel micro-benchmarks ---------------------------------------------------------------



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
    from morphcam.kernels import residual_norm as rn
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
        cases.append(("residual_norm", f"{note}, D={d}", rn.residual_norm, rn.residual_norm_ref,
                      _rotating(lambda: (lambda x, y, m: (x, y, m[2], m[0], m[1], 1e-6))(*rowwise())),
                      4 * rows * d * e, 0))
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


def run_micro(dtype, ceiling: float) -> list[dict]:
    """Each kernel against its torch reference; GB/s against the copy ceiling ``ceiling`` (GB/s)."""
    out = []
    for name, note, fused, ref, inputs, nbytes, flops in _kernel_cases(dtype):
        row = {"kernel": name, "shape": note, "bytes": nbytes}
        try:
            for label, fn in (("triton", fused), ("torch", ref)):
                ms = bench_ms(lambda fn=fn: fn(*inputs()))
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


def print_summary(rows: list[dict], dtype: str, roofs: dict) -> None:
    print(f"\nper frame, batch 1, {dtype}, {torch.cuda.get_device_name()}:")
    print("| preset | size | arm | p50 ms | p99 ms | fps | eager/arm (p50) | share of roofline |")
    print("|---|---|---|---|---|---|---|---|")
    eager = {(r["preset"], r["size"]): r.get("p50_ms") for r in rows if r["arm"] == "eager"}
    for r in rows:
        if "p50_ms" not in r:
            print(f"| {r['preset']} | {r['size']} | {r['arm']} | failed | | | {r['error'][:60]} | |")
            continue
        base = eager.get((r["preset"], r["size"]))
        ratio = f"{base / r['p50_ms']:.2f}x" if base else "-"
        share = f"{100 * r['roofline_share']:.1f}%" if "roofline_share" in r else "-"
        arm = r["arm"] + (f" ({r['compile_variant']})" if r.get("compile_variant") else "")
        print(f"| {r['preset']} | {r['size']} | {arm} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['fps']:.0f} | {ratio} | {share} |")
    print("\nroofline per frame (FLOPs at the matmul ceiling, bytes at the copy ceiling):")
    for (preset, size), roof in roofs.items():
        print(f"  {preset} {size}: {roof['flops'] / 1e9:.1f} GFLOP, {roof['bytes'] / 1e6:.1f} MB -> {1e3 * roof['roofline_ms']:.0f} us")
    print("\nTriton + our graph against torch.compile (p50 ratio, > 1 = Triton faster; target on small >= 1.5x):")
    by = {(r["preset"], r["size"], r["arm"]): r for r in rows if "p50_ms" in r}
    for (preset, size, arm), r in by.items():
        if arm != "triton+graph":
            continue
        for other in ("compile+graph", "compile", "compile+inductorgraph", "torch+graph"):
            o = by.get((preset, size, other))
            if o:
                print(f"  {preset} {size}: triton+graph vs {other}: {o['p50_ms'] / r['p50_ms']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="tiny:256x144,tiny:512x288,small:512x288", help="preset:WxH,...")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--frames", type=int, default=200, help="timed frames per arm")
    ap.add_argument("--warmup", type=int, default=20, help="untimed frames per arm first")
    ap.add_argument("--compile-presets", default="small", help="presets whose cases get the compile arms ('' = none)")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode of the compile arms")
    ap.add_argument("--inductor-graphs", action="store_true", help="also the max-autotune arm (inductor's CUDA graphs)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no compile arm once the run is this many seconds old")
    ap.add_argument("--no-micro", action="store_true", help="skip the per-kernel micro-benchmarks")
    ap.add_argument("--no-gemm-epilogue", action="store_true",
                    help="the FFN's GELU as its own kernel after the GEMM, not in cuBLASLt's epilogue (to compare)")
    ap.add_argument("--out", help="write every number as JSON here")
    args = ap.parse_args()
    from morphcam.kernels import dispatch

    with dispatch.gemm_epilogues(not args.no_gemm_epilogue):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Every arm of every case, as ``main``'s flags say."""
    if not torch.cuda.is_available():
        raise SystemExit("bench/kernels.py needs a CUDA GPU")
    t_start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  dtype {args.dtype}  "
          f"FFN GELU {'kernel' if args.no_gemm_epilogue else 'in the GEMM epilogue'}", flush=True)
    ceilings = measure_ceilings(dtype if dtype != torch.float32 else torch.bfloat16)
    print(f"ceilings: matmul {ceilings['matmul_TFLOPs']:.0f} TFLOP/s (8192^3), copy {ceilings['copy_GBs']:.0f} GB/s "
          f"(1 GiB device to device)", flush=True)

    from morphcam.model.text import TextEncoder

    text = TextEncoder(32, torch.device("cuda"), dtype)
    cases = []
    for case in args.cases.split(","):
        preset, _, size = case.partition(":")
        w, _, h = size.partition("x")
        cases.append((preset, int(w), int(h)))
    # The quick arms for every case first, so their numbers exist even if a compile runs long.
    rows, roofs = [], {}
    for preset, w, h in cases:
        setup = Setup(preset, w, h, text, dtype)
        setup.roof = roofs[(preset, f"{w}x{h}")] = setup.roofline(ceilings)
        rows += run_arms(setup, ["eager", "triton", "torch+graph", "triton+graph"], args)
        del setup
        torch.cuda.empty_cache()
    # Kernels next (half a minute); the compiles, which can run long, last.
    micro = [] if args.no_micro else run_micro(dtype, ceilings["copy_GBs"])

    def save() -> None:  # after every phase, so a run cut short by a time limit keeps what it measured
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype,
                           "gelu_epilogue": not args.no_gemm_epilogue,
                           "ceilings": ceilings, "roofline": [{"preset": p, "size": sz, **v} for (p, sz), v in roofs.items()],
                           "frames": rows, "kernels": micro, "measured_choices": dispatch.chosen()}, f, indent=1)

    save()
    compile_presets = {p for p in args.compile_presets.split(",") if p}
    arms = ["compile", "compile+graph"] + (["compile+inductorgraph"] if args.inductor_graphs else [])
    for preset, w, h in cases:
        if preset not in compile_presets:
            continue
        setup = Setup(preset, w, h, text, dtype)
        setup.roof = roofs[(preset, f"{w}x{h}")]
        for arm in arms:
            rows += run_arms(setup, [arm], args, t_start)
            save()
        torch._dynamo.reset()
        del setup
        torch.cuda.empty_cache()

    print_summary(rows, args.dtype, roofs)
    for op, c in dispatch.chosen().items():  # ring attention: our kernel or offset keys + SDPA, per shape
        print(f"{op}: {c['choice']} (" + ", ".join(f"{k} {v:.3f} ms" for k, v in c["ms"].items()) + ")")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
