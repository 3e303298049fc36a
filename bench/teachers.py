"""Time every style teacher on one batch of clips, and SyntheticClips.sample, on one device.

    python bench/teachers.py                       # 16 clips x 8 frames x 256x144, GPU if present
    python bench/teachers.py --device cpu --batch 4 --repeats 3

Inputs are synthetic clips (face cam, photos, stills), so the timings include whatever the
looks do with real content. Each teacher runs once to warm up, then ``--repeats`` times; the
table gives the median milliseconds per call and the frame rate that implies.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from morphcam.model.data import ClipSpec, SyntheticClips
from morphcam.model.teachers import TEACHERS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = ClipSpec(frames=args.frames, width=args.width, height=args.height)
    data = SyntheticClips(spec, seed=0, device=device)
    batch = data.sample(args.batch)
    x, times = (batch.inputs + 1) / 2, batch.times
    n = args.batch * args.frames
    print(f"device {device}, batch {args.batch} x {args.frames} frames x {args.width}x{args.height}, "
          f"median of {args.repeats}")
    print("| teacher | ms per batch | frames/s |\n|---|---:|---:|")
    total = 0.0
    for name, teacher in TEACHERS.items():
        sec = _time(lambda: teacher(x, times, batch.seeds), device, args.repeats)
        total += sec
        print(f"| {name} | {sec * 1e3:.1f} | {n / sec:,.0f} |")
    print(f"| all {len(TEACHERS)} (sum) | {total * 1e3:.1f} | |")
    sec = _time(lambda: data.sample(args.batch), device, args.repeats)
    print(f"| SyntheticClips.sample (inputs + teachers) | {sec * 1e3:.1f} | {n / sec:,.0f} |")


if __name__ == "__main__":
    main()
