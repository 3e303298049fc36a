"""Per-frame latency of the generator presets, eager PyTorch, through the daemon's pipeline.

Times one frame end to end as the daemon sees it: uint8 RGB in, encode, every denoising
step, decode, uint8 RGB out (GeneratorPipeline.step). Weights are the preset's default (random
until trained weights ship), which does not change the speed.

    python bench/generator_latency.py --preset tiny --size 256x144 --preset small --size 512x288
    python bench/generator_latency.py --device cuda --dtype bfloat16 --preset small --size 512x288
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch


def _parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def bench(preset: str, size: tuple[int, int], args: argparse.Namespace) -> dict:
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    pipe = GeneratorPipeline.load(preset, device=args.device, dtype=args.dtype)
    cfg = pipe.generator.config
    w, h = size
    ids = [f"s{i}" for i in range(args.sessions)]
    for sid in ids:
        pipe.open_session(sid, SessionParams(w, h, PromptChange.single("pencil sketch"), seed=0))
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    batch = [(sid, frame) for sid in ids]
    times = []
    for i in range(args.warmup + args.frames):
        t0 = time.perf_counter()
        out = pipe.step(batch)  # ends with a device-to-host copy, so CUDA work is finished
        dt = time.perf_counter() - t0
        if any(isinstance(o, Exception) for o in out):
            raise next(o for o in out if isinstance(o, Exception))
        if i >= args.warmup:
            times.append(dt * 1e3)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return {
        "preset": preset,
        "size": f"{w}x{h}",
        "tokens/frame": cfg.tokens_per_frame(w, h),
        "steps": len(cfg.sigmas),
        "sessions": args.sessions,
        "device": pipe.device,
        "dtype": str(next(pipe.generator.model.parameters()).dtype).replace("torch.", ""),
        "p50_ms": p50,
        "p99_ms": p99,
        "fps": 1000.0 * args.sessions * len(times) / sum(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help="preset to time (repeatable; default tiny and small)")
    ap.add_argument("--size", action="append", help="WxH per --preset, in order (default: the preset's size)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--frames", type=int, default=100, help="timed frames")
    ap.add_argument("--warmup", type=int, default=10, help="untimed frames first")
    ap.add_argument("--sessions", type=int, default=1, help="sessions stepped together in one batch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the random-weights warning is expected here
    torch.set_num_threads(args.threads)

    from morphcam.model.config import ModelConfig

    presets = args.preset or ["tiny", "small"]
    sizes = args.size or []
    rows = []
    for i, preset in enumerate(presets):
        cfg = ModelConfig.from_name(preset)
        size = _parse_size(sizes[i]) if i < len(sizes) else (cfg.width, cfg.height)
        rows.append(bench(preset, size, args))
        r = rows[-1]
        print(
            f"{r['preset']:>15} {r['size']:>9} tokens={r['tokens/frame']:<5} steps={r['steps']} "
            f"sessions={r['sessions']} {r['device']} {r['dtype']}: p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, {r['fps']:.1f} fps",
            flush=True,
        )
    print()
    print("| preset | size | tokens/frame | steps | device | dtype | p50 ms | p99 ms | fps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['size']} | {r['tokens/frame']} | {r['steps']} | {r['device']} | {r['dtype']} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.1f} |"
        )


if __name__ == "__main__":
    main()
