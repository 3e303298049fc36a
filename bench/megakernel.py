"""The mega-kernel against the CUDA-graphed fused kernels, per denoising step and per frame.

Per denoising step (one DiT call at batch 1, one session, a captured CUDA graph replayed; CUDA
events around each replay, synchronised after each), for each preset at its own frame size:

  torch+graph       the network on the torch ops, one graph per step
  triton+graph      the network on the fused Triton kernels, one graph per step (the baseline)
  megakernel+graph  MegakernelExecutor.denoise (torch prologue, the persistent kernel, epilogue),
                    with the norms fused into the matmuls
  megakernel-only   the persistent kernel alone (its launch and every tile of the step)
  megakernel-split+graph  with ``--split-norms``: megakernel+graph on the first program layout, the
                    norms as their own stages (``compile_program(fuse_norms=False)``), for the A/B

then the ratio triton+graph / megakernel+graph (the issue's target: >= 2x for tiny and small),
and the relative difference of the two steps' outputs. Per frame (encode, every Euler step,
decode) ``triton+graph`` and ``megakernel+graph`` through ``CudaGraphRunner``, with
``bench/kernels.py``'s timing helper. ``--long-steps N`` replays the mega-kernel's step N times
on the first preset (the 100,000-step no-hang run), checking its watchdog every 1000 steps.

    python bench/megakernel.py --out megakernel.json
    python bench/megakernel.py --presets tiny,small,wan-1.3b-shape --long-steps 100000 --out mk.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

from morphcam.kernels import dispatch


def _bench_kernels():
    """bench/kernels.py (a script, not a package), for its frame timing and setup helpers."""
    spec = importlib.util.spec_from_file_location("bench_kernels", Path(__file__).with_name("kernels.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def capture(fn, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Run ``fn`` ``warmup`` times (compiles, cuBLAS choices), then capture one call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def time_replays(graph: torch.cuda.CUDAGraph, n: int) -> dict:
    """Per replay: p50 and p99 (CUDA events, synchronised after each); plus the mean of n
    back-to-back replays (throughput, no host wait between steps)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    ms = []
    for _ in range(n):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    ms.sort()
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    end.synchronize()
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(n - 1, int(0.99 * (n - 1)))],
            "mean_back_to_back_ms": start.elapsed_time(end) / n}


class StepCase:
    """One preset: random weights, a session's ring after a few frames, one step's inputs."""

    def __init__(self, preset: str, dtype: torch.dtype, n_programs: int | None, split_norms: bool = False) -> None:
        from morphcam.kernels.megakernel.diff import random_dit
        from morphcam.kernels.megakernel.executor import MegakernelExecutor
        from morphcam.model.attention import StreamContext
        from morphcam.model.config import ModelConfig
        from morphcam.model.kv_cache import KVRingCache

        self.cfg = cfg = ModelConfig.from_name(preset)
        self.dit = random_dit(cfg, "cuda", dtype)
        # The fused layout whatever the width (the executor's default picks by width), the split one
        # beside it for the A/B.
        self.executor = MegakernelExecutor(self.dit, n_programs=n_programs, fuse_norms=True)
        self.split = MegakernelExecutor(self.dit, n_programs=n_programs, fuse_norms=False) if split_norms else None
        latent = cfg.latent_size(cfg.width, cfg.height)
        self.cache = KVRingCache(cfg, latent, "cuda", dtype)
        for _ in range(cfg.cache_frames):  # a full ring: every slot valid
            self.cache.begin_chunk()
            self.cache.commit()
        self.cache.begin_chunk()
        self.ctx = StreamContext([self.cache])
        g = torch.Generator(device="cuda").manual_seed(0)
        t = cfg.frames_per_step
        x = torch.randn(1, t, cfg.latent_channels, *latent, device="cuda", generator=g).to(dtype)
        self.args = (x, torch.randn_like(x), torch.full((1, t), 0.7, device="cuda", dtype=dtype),
                     torch.full((1, t), 0.5, device="cuda", dtype=dtype),
                     torch.randn(1, cfg.text_dim, device="cuda", generator=g).to(dtype),
                     torch.randn(1, cfg.text_tokens, cfg.text_dim, device="cuda", generator=g).to(dtype))
        self.out: dict[str, torch.Tensor] = {}

    def network(self, backend: str):
        def fn():
            with dispatch.force(backend):
                self.out[backend] = self.dit(*self.args, self.ctx)
        return fn

    def megakernel(self, executor=None, key: str = "megakernel"):
        executor = executor or self.executor

        def fn():
            self.out[key] = executor.denoise(*self.args, self.ctx)
        return fn

    def kernel_only(self):
        program, bufs, counters = self.executor.plan(self.cache.tokens_per_frame)
        return lambda: self.executor.execute(program, bufs, counters)


def run_steps(preset: str, args, dtype) -> list[dict]:
    case = StepCase(preset, dtype, args.programs, args.split_norms)
    prog = case.executor.plan(case.cache.tokens_per_frame)[0]
    info = {"preset": preset, "size": f"{case.cfg.width}x{case.cfg.height}", "tokens": case.cache.tokens_per_frame,
            "programs": prog.n_programs, "instructions": len(prog.instructions), "stages": len(prog.stage_names)}
    print(f"  {preset}: {info['tokens']} tokens, {info['instructions']} tiles in {info['stages']} stages "
          f"on {info['programs']} programs", flush=True)
    rows = []
    arms = {"torch+graph": case.network("torch"), "triton+graph": case.network("triton"),
            "megakernel+graph": case.megakernel(), "megakernel-only": case.kernel_only()}
    if case.split is not None:
        arms["megakernel-split+graph"] = case.megakernel(case.split, "megakernel-split")
    with torch.inference_mode():
        for arm, fn in arms.items():
            try:
                t0 = time.perf_counter()
                graph = capture(fn)
                r = time_replays(graph, args.steps)
                case.executor.check()
                if case.split is not None:
                    case.split.check()
                r["setup_s"] = round(time.perf_counter() - t0, 1)
                print(f"    {arm:17s} p50 {r['p50_ms'] * 1e3:8.1f} us  p99 {r['p99_ms'] * 1e3:8.1f} us  "
                      f"back-to-back {r['mean_back_to_back_ms'] * 1e3:8.1f} us", flush=True)
            except Exception as exc:  # one failing arm must not stop the others
                traceback.print_exc(limit=4)
                r = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            rows.append({**info, "arm": arm, **r})
    if "triton" in case.out and "megakernel" in case.out:
        a, b = case.out["triton"].double(), case.out["megakernel"].double()
        rel = float((a - b).norm() / a.norm().clamp_min(1e-30))
        print(f"    megakernel vs triton step output: rel diff {rel:.2e}", flush=True)
        for r in rows:
            r["rel_diff_vs_triton"] = rel
    if "megakernel" in case.out and "megakernel-split" in case.out:  # the two layouts, the same step
        a, b = case.out["megakernel-split"].double(), case.out["megakernel"].double()
        rel = float((a - b).norm() / a.norm().clamp_min(1e-30))
        print(f"    fused vs split norms step output: rel diff {rel:.2e}", flush=True)
        for r in rows:
            r["rel_diff_fused_vs_split"] = rel
    return rows


def run_frames(preset: str, args, dtype, text) -> list[dict]:
    """Whole frames through CudaGraphRunner, the fused path against the mega-kernel."""
    bk = _bench_kernels()
    from morphcam.model.config import ModelConfig

    cfg = ModelConfig.from_name(preset)
    setup = bk.Setup(preset, cfg.width, cfg.height, text, dtype)
    rows = []
    for arm in ("triton+graph", "megakernel+graph"):
        try:
            reason = setup.gen.use_executor("megakernel" if arm.startswith("megakernel") else "graph")
            if reason:
                raise RuntimeError(reason)
            r = bk.time_frames(bk.arm_graph(setup, "triton"), setup.frames, args.warmup, args.frames)
            print(f"    frame {arm:17s} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  {r['fps']:.0f} fps", flush=True)
        except Exception as exc:
            traceback.print_exc(limit=4)
            r = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        rows.append({"preset": preset, "size": f"{cfg.width}x{cfg.height}", "arm": f"frame {arm}", **r})
    return rows


def long_run(preset: str, steps: int, dtype, n_programs, budget_s: float) -> dict:
    """The mega-kernel's step (begin_chunk, step, commit) replayed ``steps`` times, or as many as
    fit in ``budget_s`` (checked every 1000 steps, with the watchdog)."""
    case = StepCase(preset, dtype, n_programs)
    ex, cache = case.executor, case.cache

    def step():
        cache.begin_chunk()
        case.out["megakernel"] = ex.denoise(*case.args, case.ctx)
        cache.commit_device()

    with torch.inference_mode():
        graph = capture(step)
        torch.cuda.synchronize()
        before = int(ex.error[3])  # launches so far (the warm-up steps)
        t0 = time.perf_counter()
        error = None
        try:
            for i in range(steps):
                graph.replay()
                if i % 1000 == 999 or i == steps - 1:
                    ex.check()
                    if time.perf_counter() - t0 > budget_s:
                        break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:400]
        wall = time.perf_counter() - t0
    finite = bool(torch.isfinite(case.out["megakernel"]).all())
    done = int(ex.error[3]) - before  # the kernel counts its own launches
    r = {"preset": preset, "steps_asked": steps, "steps_done": done, "wall_s": round(wall, 1),
         "mean_step_ms": wall * 1e3 / max(done, 1), "finite": finite, "error": error,
         "stopped_by_budget": done < steps and error is None}
    print(f"  long run {preset}: {r}", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small", help="comma-separated presets, each at its own frame size")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--steps", type=int, default=200, help="timed replays per step arm")
    ap.add_argument("--frames", type=int, default=100, help="timed frames per frame arm")
    ap.add_argument("--warmup", type=int, default=10, help="untimed frames per frame arm")
    ap.add_argument("--no-frames", action="store_true", help="skip the whole-frame arms")
    ap.add_argument("--programs", type=int, default=None, help="mega-kernel programs (default: the SM count)")
    ap.add_argument("--long-steps", type=int, default=0, help="then replay the first preset's step this many times")
    ap.add_argument("--long-budget-s", type=float, default=120.0, help="stop the long run after about this long")
    ap.add_argument("--split-norms", action="store_true",
                    help="also time the first program layout (norms as their own stages) per step")
    ap.add_argument("--out", help="write every number as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/megakernel.py needs a CUDA GPU")
    t_start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    device = torch.cuda.get_device_name()
    print(f"device: {device}  torch {torch.__version__}  dtype {args.dtype}", flush=True)
    presets = args.presets.split(",")
    steps, frames, long = [], [], None

    def save() -> None:  # after every phase, so a run cut short keeps what it measured
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": device, "dtype": args.dtype, "torch": torch.__version__, "steps": steps,
                           "frames": frames, "long_run": long}, f, indent=1)

    for preset in presets:
        steps += run_steps(preset, args, dtype)
        torch.cuda.empty_cache()
        save()
    if not args.no_frames:
        from morphcam.model.text import TextEncoder

        text = TextEncoder(32, torch.device("cuda"), dtype)
        for preset in presets:
            frames += run_frames(preset, args, dtype, text)
            torch.cuda.empty_cache()
            save()
    if args.long_steps:
        long = long_run(presets[0], args.long_steps, dtype, args.programs, args.long_budget_s)
        save()

    print(f"\nper denoising step, batch 1, {args.dtype}, {device}:")
    print("| preset | size | arm | p50 us | p99 us | back-to-back us | triton+graph / arm |")
    print("|---|---|---|---|---|---|---|")
    base = {r["preset"]: r.get("p50_ms") for r in steps if r["arm"] == "triton+graph"}
    for r in steps:
        if "p50_ms" not in r:
            print(f"| {r['preset']} | {r['size']} | {r['arm']} | failed | | | {r['error'][:60]} |")
            continue
        b = base.get(r["preset"])
        r["speedup_vs_triton_graph"] = b / r["p50_ms"] if b else None
        ratio = f"{b / r['p50_ms']:.2f}x" if b else "-"
        print(f"| {r['preset']} | {r['size']} | {r['arm']} | {r['p50_ms'] * 1e3:.1f} | {r['p99_ms'] * 1e3:.1f} | "
              f"{r['mean_back_to_back_ms'] * 1e3:.1f} | {ratio} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    save()  # again: the rows now carry their speedups


if __name__ == "__main__":
    main()
