"""A long stream through the full generator: memory, NaN, positions and buffers over N steps.

The test suite runs 10,000 steps of a two-layer cut of `tiny`; this runs the preset itself
(every layer, every Euler step) for as long as asked and prints one line per checkpoint.

    python bench/infinite_run.py --preset tiny --size 64x64 --steps 10000
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from morphcam.model.checkpoint import load_model
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", default="64x64")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    model = load_model(args.preset, None, device=device, dtype=torch.float32)
    gen = StreamGenerator(model, TextEncoder())
    session = gen.open_session(w, h, "pencil sketch", seed=0)
    cache = session.cache
    pointers = cache.storage_pointers()
    top = model.config.frame_positions - 1
    frame = torch.rand(1, 1, 3, h, w, device=device) * 2 - 1
    rss0 = None
    t0 = time.perf_counter()
    for i in range(1, args.steps + 1):
        out = gen.step([session], frame)
        if i % args.every == 0:
            finite = bool(torch.isfinite(out).all() and torch.isfinite(cache.k).all() and torch.isfinite(cache.v).all())
            lo, hi = int(cache.frame_idx.min()), int(cache.frame_idx.max())
            same = cache.storage_pointers() == pointers
            rss = rss_mib()
            rss0 = rss0 or rss
            print(f"step {i}: finite={finite} frame_idx={lo}..{hi} (bound {top}) buffers_unchanged={same} "
                  f"rss={rss:.1f} MiB ({rss - rss0:+.1f}) {(time.perf_counter() - t0) / i * 1000:.1f} ms/step", flush=True)
            if not (finite and 0 <= lo and hi <= top and same):
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
