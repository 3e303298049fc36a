"""Frame autoencoder variants trained the same way on the same frames, on any device: which design
reconstructs held-out frames best for a given number of steps.

Frames come once from the synthetic clips (inputs and teacher targets, training split for
training, held-out split for the score), then each variant trains on them with the autoencoder
stage's loss (L1 + L2 + 0.5 x image-gradient L1), AdamW and a cosine schedule, and reports the
held-out PSNR as it goes. A plain 8x average followed by a bilinear upsampling is the floor.

    python bench/autoencoder_variants.py --steps 400 --variants base skip
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import torch
import torch.nn.functional as F

from morphcam.daemon.cli import frame_size
from morphcam.model.autoencoder import FrameAutoencoder
from morphcam.model.config import ModelConfig
from morphcam.model.data import ClipSpec, SyntheticClips
from morphcam.model.train.objectives import image_gradient_l1

VARIANTS = {
    "base": {},
    "skip": {"ae_skip": True},
    "lat16": {"latent_channels": 16},
    "widedec": {"ae_decoder_channels": (128, 64, 32)},
    "skip_widedec": {"ae_skip": True, "ae_decoder_channels": (128, 64, 32)},
}


def frames(source: SyntheticClips, n: int, chunk: int = 32) -> torch.Tensor:
    """(n, 3, H, W) in [-1, 1]: inputs and targets of n // 2 clips of two frames."""
    out = []
    while sum(len(f) for f in out) < n:
        b = source.sample(chunk)
        out.append(torch.cat((b.inputs, b.targets), 1).flatten(0, 1))
    return torch.cat(out)[:n]


def psnr(recon: torch.Tensor, ref: torch.Tensor) -> float:
    mse = ((recon - ref) / 2).square().mean((1, 2, 3))
    return float((10 * torch.log10(1 / mse)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--variants", nargs="+", default=["base", "skip"], choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=frame_size, default=(96, 64))
    p.add_argument("--train-frames", type=int, default=4096)
    p.add_argument("--test-frames", type=int, default=256)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    spec = ClipSpec(frames=2, width=a.size[0], height=a.size[1])
    torch.manual_seed(0)
    train = frames(SyntheticClips(spec, seed=1, device=dev), a.train_frames)
    test = frames(SyntheticClips(spec, split="eval", seed=2, device=dev), a.test_frames)
    floor = psnr(F.interpolate(F.avg_pool2d(test, 8), scale_factor=8, mode="bilinear", align_corners=False), test)
    print(f"8x average + bilinear upsampling: {floor:.2f} dB held-out", flush=True)
    rows = []
    for name in a.variants:
        cfg = dataclasses.replace(ModelConfig.from_name(a.preset), **VARIANTS[name])
        torch.manual_seed(0)
        ae = FrameAutoencoder(cfg).to(dev)
        opt = torch.optim.AdamW(ae.parameters(), lr=a.lr, betas=(0.9, 0.99))
        g = torch.Generator().manual_seed(0)
        t0, curve = time.perf_counter(), []
        for step in range(a.steps):
            f = train[torch.randint(len(train), (a.batch,), generator=g).to(dev)]
            r = ae.reconstruct(ae.encode(f))
            loss = (r - f).abs().mean() + (r - f).square().mean() + 0.5 * image_gradient_l1(r, f)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
            opt.step()
            for group in opt.param_groups:
                group["lr"] = a.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step + 1) / a.steps)))
            if (step + 1) % a.every == 0 or step + 1 == a.steps:
                with torch.no_grad():
                    curve.append((step + 1, psnr(ae.decode(ae.encode(test)), test)))
                print(f"{name}: step {step + 1} held-out {curve[-1][1]:.2f} dB", flush=True)
        params = sum(p.numel() for p in ae.parameters())
        rows.append({"variant": name, "params": params, "curve": curve, "seconds": time.perf_counter() - t0})
    print("| variant | params | " + " | ".join(f"step {s}" for s, _ in rows[0]["curve"]) + " |")
    print("|---|---|" + "---|" * len(rows[0]["curve"]))
    for r in rows:
        print(f"| {r['variant']} | {r['params'] / 1e3:.0f}k | " + " | ".join(f"{v:.2f} dB" for _, v in r["curve"]) + " |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "floor_db": floor, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
