"""Buffer-by-buffer diff of two mega-kernel executors on the same random inputs.

    python -m morphcam.kernels.megakernel.diff                       # interpreter vs triton, small config
    python -m morphcam.kernels.megakernel.diff --stop-layer 0        # only layer 0's instructions
    python -m morphcam.kernels.megakernel.diff --stop-op 40 --preset tiny --device cuda --dtype bfloat16

Both executors start from one set of step buffers (random prologue inputs, a ring filled with
random keys and values, some slots invalid) and run instructions 0..N; every buffer a step
writes is then compared. Without a GPU the Triton side runs under ``TRITON_INTERPRET=1`` (set
by ``main`` when no CUDA device is visible).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

from .buffers import StepBuffers, prologue
from .program import last_instruction_of_layer


def small_config(base: str = "tiny", **overrides):
    """A small variant of a preset for CPU runs: 2 layers, dim 64, 2 heads, a 128x48 frame (24
    tokens: a full and a partial 16-row tile)."""
    from morphcam.model.config import ModelConfig

    fields = dict(dim=64, n_heads=2, n_layers=2, ffn_dim=128, window_frames=2, width=128, height=48)
    fields.update(overrides)
    return dataclasses.replace(ModelConfig.from_name(base), **fields)


def random_dit(config, device, dtype, seed: int = 0):
    """A ``CausalDiT`` with random weights large enough that every block matters."""
    from morphcam.model.dit import CausalDiT

    torch.manual_seed(seed)
    dit = CausalDiT(config).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.1)
    return dit.to(device, dtype)


def random_step(executor, seed: int = 0, frames_seen: int = 3) -> StepBuffers:
    """Step buffers of ``executor``'s plan, filled from random inputs and a random, partly valid ring."""
    from morphcam.model.kv_cache import KVRingCache

    cfg, dev, dt = executor.config, executor.device, executor.dtype
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dev, dt)

    latent = cfg.latent_size(cfg.width, cfg.height)
    cache = KVRingCache(cfg, latent, dev, dt)
    cache.k.copy_(rand(*cache.k.shape))
    cache.v.copy_(rand(*cache.v.shape))
    for _ in range(frames_seen):  # the ring's bookkeeping after a few frames: some slots still empty
        cache.begin_chunk()
        cache.commit()
    cache.begin_chunk()
    _, bufs, _ = executor.plan(cache.tokens_per_frame)
    bufs.bind_cache(cache)
    t = cfg.frames_per_step
    with torch.inference_mode():
        prologue(executor.dit, bufs, rand(1, t, cfg.latent_channels, *latent), rand(1, t, cfg.latent_channels, *latent),
                 torch.rand(1, t, generator=gen).to(dev, dt), torch.rand(1, t, generator=gen).to(dev, dt),
                 rand(1, cfg.text_dim), rand(1, cfg.text_tokens, cfg.text_dim))
    return bufs.clone()


def diff(a, b, bufs: StepBuffers, stop_op: int | None = None, stop_layer: int | None = None) -> list[dict]:
    """Run executors ``a`` and ``b`` (``MegakernelExecutor``s of one model) from copies of ``bufs``
    through instruction ``stop_op`` (or the end of layer ``stop_layer``) and compare every buffer
    a step writes. Returns one dict per buffer: name, max_abs, rel (||a - b|| / ||a||), finite."""
    program, _, counters = a.plan(bufs.cos.shape[0])
    last = len(program.instructions) - 1
    if stop_layer is not None:
        last = last_instruction_of_layer(program, stop_layer)
    if stop_op is not None:
        last = min(last, stop_op)
    results = {}
    for name, ex in (("a", a), ("b", b)):
        run = bufs.clone()
        prog, _, cnt = ex.plan(bufs.cos.shape[0])
        with torch.inference_mode():
            ex.execute(prog, run, cnt, last=last)
            ex.check()
        results[name] = run
    rows = []
    for key in StepBuffers.WRITTEN:
        x, y = results["a"].named()[key].double(), results["b"].named()[key].double()
        err = (x - y).norm() / x.norm().clamp_min(1e-30)
        rows.append({"name": key, "max_abs": float((x - y).abs().max()), "rel": float(err),
                     "finite": bool(torch.isfinite(y).all() and torch.isfinite(x).all())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morphcam.kernels.megakernel.diff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="interpreter", choices=("interpreter", "triton"))
    parser.add_argument("--b", default="triton", choices=("interpreter", "triton"))
    parser.add_argument("--preset", default="small-cpu", help="a model preset, or small-cpu (2 layers, dim 64)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--stop-op", type=int, default=None, help="stop after instruction N")
    parser.add_argument("--stop-layer", type=int, default=None, help="stop after layer L's last instruction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=None, help="relative error allowed (default 1e-4 fp32, 3e-2 else)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is imported
    from morphcam.model.config import ModelConfig

    from .executor import MegakernelExecutor

    dtype = getattr(torch, args.dtype)
    cfg = small_config() if args.preset == "small-cpu" else ModelConfig.from_name(args.preset)
    dit = random_dit(cfg, args.device, dtype, args.seed)
    a, b = MegakernelExecutor(dit, backend=args.a), MegakernelExecutor(dit, backend=args.b)
    if a.tiles != b.tiles:
        b.tiles = a.tiles  # the same tiles, so both run the same instruction list
    rows = diff(a, b, random_step(a, args.seed), args.stop_op, args.stop_layer)
    tol = args.tol if args.tol is not None else (1e-4 if dtype == torch.float32 else 3e-2)
    bad = [r["name"] for r in rows if not r["finite"] or r["rel"] > tol]
    for r in rows:
        flag = "DIFF" if r["name"] in bad else "ok"
        print(f"{r['name']:10s} max_abs {r['max_abs']:.3e}  rel {r['rel']:.3e}  {flag}")
    print(json.dumps({"ok": not bad, "differ": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
