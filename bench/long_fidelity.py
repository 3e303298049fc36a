"""Infinite duration, measured: one stream of N frames through the shipped (or given) model,
with fidelity against the style's teacher over the first and the last ``--window`` frames,
non-finite outputs counted on the device, and memory sampled along the way.

On CUDA the frame step is replayed as one CUDA graph (the daemon's path); elsewhere it runs
eagerly. The input is the built-in face cam, a 10-second loop, so the first and last windows
see the same kind of content.

    python bench/long_fidelity.py --device cuda --frames 100000 --out long.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from morphcam.daemon.cli import frame_size
from morphcam.model import metrics
from morphcam.model.checkpoint import load_model
from morphcam.model.evaluate import FACECAM, load_input
from morphcam.model.generator import StreamGenerator
from morphcam.model.teachers import TEACHERS


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="default: the shipped weights of --preset")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--style", default="pencil sketch")
    p.add_argument("--size", type=frame_size, default=(256, 144))
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--window", type=int, default=1000, help="frames measured at the start and at the end")
    p.add_argument("--every", type=int, default=10_000, help="print a line every this many frames")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--out", help="write the summary JSON here")
    a = p.parse_args()
    if a.frames < 2 * a.window or a.window < 1:
        p.error("--frames must be at least twice --window (and --window >= 1)")
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    teacher = TEACHERS[a.style]
    torch.manual_seed(0)
    gen = StreamGenerator(load_model(a.preset, a.checkpoint, device, dtype=dtype))
    w, h = a.size
    session = gen.open_session(w, h, teacher.prompt, seed=0)
    frames, fps = load_input(FACECAM, a.size, int(10 * a.fps), a.fps)
    frames = frames.to(device).float().div(255)  # (L, 3, H, W) in [0, 1]
    loop = frames.shape[0]
    if cuda:
        from morphcam.model.cuda_graph import CudaGraphRunner

        runner = CudaGraphRunner(gen, [session], w, h)
        step = lambda x: runner.step(x)  # noqa: E731
    else:
        step = lambda x: gen.step([session], x)  # noqa: E731

    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    psnr_first, psnr_last, lines = [], [], []
    t0 = t_last = time.perf_counter()
    for i in range(a.frames):
        x = frames[i % loop]
        y = step((x * 2 - 1).to(dtype)[None, None])[0, 0]
        nonfinite += (~torch.isfinite(y)).sum()
        if i < a.window or i >= a.frames - a.window:
            out = ((y.float() + 1) / 2).clamp(0, 1)
            ref = teacher(x[None, None], torch.tensor([[i / fps]], device=device), 0)[0, 0]
            (psnr_first if i < a.window else psnr_last).append(metrics.psnr(out[None], ref[None])[0])
        if (i + 1) % a.every == 0 or i + 1 == a.frames:
            if cuda:
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            line = {"frame": i + 1, "fps_since_last": (a.every if (i + 1) % a.every == 0 else (i + 1) % a.every) / (now - t_last),
                    "rss_mib": round(rss_mib(), 1), "nonfinite": int(nonfinite)}
            if cuda:
                line["cuda_allocated_mib"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
            print(json.dumps(line), flush=True)
            lines.append(line)
            t_last = now
    first = float(torch.stack(psnr_first).mean())
    last = float(torch.stack(psnr_last).mean())
    summary = {
        "preset": gen.config.name, "style": a.style, "size": list(a.size), "device": str(device),
        "graph": bool(cuda and runner.captured), "frames": a.frames, "window": a.window,
        "psnr_first_db": first, "psnr_last_db": last, "delta_db": last - first,
        "nonfinite": int(nonfinite), "seconds": time.perf_counter() - t0, "checkpoints": lines,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "checkpoints"}))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if summary["nonfinite"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
