"""Per-frame latency of the generator presets, eager PyTorch, through the daemon's pipeline.

Times one frame end to end as the daemon sees it: uint8 RGB in, encode, every denoising
step, decode, uint8 RGB out (GeneratorPipeline.step). Weights are the preset's default (random
until trained weights ship), which does not change the speed.

With --frames-per-step, --sink, --window or --steps the preset is varied and the engine
(StreamGenerator.step, tensors on the device) is timed instead, one chunk per step; latency is
per chunk and fps counts frames. LongLive's settings on the Wan shapes, for example:

    python bench/generator_latency.py --preset tiny --size 256x144 --preset small --size 512x288
    python bench/generator_latency.py --device cuda --dtype bfloat16 --preset small --size 512x288
    python bench/generator_latency.py --device cuda --dtype bfloat16 --preset wan-1.3b-shape \
        --frames-per-step 3 --sink 3 --window 9 --steps 4
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from morphcam.daemon.cli import frame_size


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    if args.frames_per_step:
        out["frames_per_step"] = args.frames_per_step
    if args.sink is not None:
        out["sink_frames"] = args.sink
    if args.window is not None:
        out["window_frames"] = args.window
    if args.steps:
        out["sigmas"] = tuple(1.0 - i / args.steps for i in range(args.steps))
    return out


def _time(step, n_warmup: int, n_timed: int) -> list[float]:
    times = []
    for i in range(n_warmup + n_timed):
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        if i >= n_warmup:
            times.append(dt * 1e3)
    return sorted(times)


def _pipeline_step(preset: str, size: tuple[int, int], args: argparse.Namespace):
    """uint8 frames through GeneratorPipeline.step, as the daemon calls it."""
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    pipe = GeneratorPipeline.load(preset, device=args.device, dtype=args.dtype)
    w, h = size
    ids = [f"s{i}" for i in range(args.sessions)]
    for sid in ids:
        pipe.open_session(sid, SessionParams(w, h, PromptChange.single("pencil sketch"), seed=0))
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    batch = [(sid, frame) for sid in ids]

    def step() -> None:
        out = pipe.step(batch)  # ends with a device-to-host copy, so CUDA work is finished
        for o in out:
            if isinstance(o, Exception):
                raise o

    return pipe.generator, step


def _engine_step(preset: str, size: tuple[int, int], args: argparse.Namespace):
    """Tensors through StreamGenerator.step with a varied preset, one chunk per call."""
    from morphcam.daemon.generator_pipeline import _resolve_device, _resolve_dtype
    from morphcam.model.config import ModelConfig
    from morphcam.model.generator import StreamGenerator
    from morphcam.model.network import RestyleModel

    device = _resolve_device(args.device)
    cfg = ModelConfig.from_name(preset, **_overrides(args))
    gen = StreamGenerator(RestyleModel(cfg).to(device=device, dtype=_resolve_dtype(args.dtype, device)))
    w, h = size
    sessions = [gen.open_session(w, h, "pencil sketch", seed=0) for _ in range(args.sessions)]
    frames = torch.rand(len(sessions), cfg.frames_per_step, 3, h, w, device=device) * 2 - 1

    def step() -> None:
        gen.step(sessions, frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return gen, step


def bench(preset: str, size: tuple[int, int], args: argparse.Namespace) -> dict:
    engine = bool(_overrides(args))
    gen, step = (_engine_step if engine else _pipeline_step)(preset, size, args)
    cfg = gen.config
    w, h = size
    times = _time(step, args.warmup, args.frames)
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return {
        "preset": preset,
        "size": f"{w}x{h}",
        "tokens/frame": cfg.tokens_per_frame(w, h),
        "steps": len(cfg.sigmas),
        "sessions": args.sessions,
        "frames/step": cfg.frames_per_step,
        "path": "engine" if engine else "pipeline",
        "device": str(gen.device),
        "dtype": str(gen.dtype).replace("torch.", ""),
        "p50_ms": p50,
        "p99_ms": p99,
        "fps": 1000.0 * args.sessions * cfg.frames_per_step * len(times) / sum(times),
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
    ap.add_argument("--frames-per-step", type=int, help="frames per chunk (engine path; 3 = LongLive)")
    ap.add_argument("--sink", type=int, help="sink frames (engine path)")
    ap.add_argument("--window", type=int, help="window frames (engine path)")
    ap.add_argument("--steps", type=int, help="Euler steps, sigmas evenly spaced from 1 (engine path)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the random-weights warning is expected here
    torch.set_num_threads(args.threads)

    from morphcam.model.config import ModelConfig

    presets = args.preset or ["tiny", "small"]
    sizes = args.size or []
    rows = []
    for i, preset in enumerate(presets):
        cfg = ModelConfig.from_name(preset)
        size = frame_size(sizes[i]) if i < len(sizes) else (cfg.width, cfg.height)
        rows.append(bench(preset, size, args))
        r = rows[-1]
        print(
            f"{r['preset']:>15} {r['size']:>9} tokens={r['tokens/frame']:<5} steps={r['steps']} "
            f"sessions={r['sessions']} frames/step={r['frames/step']} {r['path']} {r['device']} {r['dtype']}: "
            f"p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, {r['fps']:.1f} fps",
            flush=True,
        )
    print()
    print("| preset | size | tokens/frame | steps | frames/step | path | device | dtype | p50 ms | p99 ms | fps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['size']} | {r['tokens/frame']} | {r['steps']} | {r['frames/step']} | {r['path']} "
            f"| {r['device']} | {r['dtype']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.1f} |"
        )


if __name__ == "__main__":
    main()
