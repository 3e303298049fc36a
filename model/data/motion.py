"""Synthetic camera motion and moving objects, batched with affine grids.

The camera looks at a canvas larger than the output (a photo crop or a rendered scene) and
pans, zooms, rotates and shakes over it; each frame is one ``grid_sample`` of the canvas.
Moving objects are drawn in screen space afterwards, as things passing in front of the camera.
All random choices come from the caller's CPU ``torch.Generator``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..host import to_device


def _rand(rng: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=rng)


def camera_paths(rng: torch.Generator, times: Tensor, aspect: float, amount: Tensor) -> Tensor:
    """Affine camera matrices (B, T, 2, 3) for ``F.affine_grid`` over a canvas of the output's
    aspect. ``times`` (B, T) seconds from the clip start; ``amount`` (B,) scales the motion
    (0: a still camera, 1: full pans, zooms, rotations and shake)."""
    b, _ = times.shape
    t = times - times[:, :1]
    a = amount.view(b, 1)
    on = lambda p: (torch.rand(b, 1, generator=rng) < p).float()  # noqa: E731 - one motion kind or not
    zoom = (_rand(rng, b, 1, lo=0.7, hi=1.0) + on(0.4) * a * _rand(rng, b, 1, lo=-0.25, hi=0.25) * t).clamp(0.55, 1.0)
    angle = (on(0.5) * _rand(rng, b, 1, lo=-0.08, hi=0.08) + on(0.3) * a * _rand(rng, b, 1, lo=-0.2, hi=0.2) * t)
    pan = on(0.6) * a * _rand(rng, b, 1, lo=-0.35, hi=0.35)
    tilt = on(0.4) * a * _rand(rng, b, 1, lo=-0.25, hi=0.25)
    start = _rand(rng, b, 2, lo=-1.0, hi=1.0)
    # Hand-held shake: two sinusoids per axis at a few hertz.
    shake_amp = on(0.5) * a * _rand(rng, b, 1, hi=0.02)
    f1, f2 = _rand(rng, b, 1, lo=2, hi=9), _rand(rng, b, 1, lo=2, hi=9)
    p1, p2 = _rand(rng, b, 1, hi=6.3), _rand(rng, b, 1, hi=6.3)
    sx = shake_amp * (torch.sin(2 * math.pi * f1 * t + p1) + 0.5 * torch.sin(2 * math.pi * f2 * t + p2))
    sy = shake_amp * (torch.cos(2 * math.pi * f2 * t + p1) + 0.5 * torch.sin(2 * math.pi * f1 * t + p2))
    margin = (1 - zoom).clamp(min=0)  # how far the window can move and stay on the canvas
    tx = (start[:, :1] * margin + pan * t).clamp(-1, 1) + sx
    ty = (start[:, 1:] * margin + tilt * t).clamp(-1, 1) + sy
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation happens in pixel units (x scaled by the aspect) so it does not shear the image.
    row0 = torch.stack([zoom * cos, -zoom * sin / aspect, tx], -1)
    row1 = torch.stack([zoom * sin * aspect, zoom * cos, ty], -1)
    return torch.stack([row0, row1], -2)  # (B, T, 2, 3)


def film(canvas: Tensor, theta: Tensor, h: int, w: int) -> Tensor:
    """Frames seen by the camera: ``canvas`` (B, Tc, 3, Hc, Wc) with Tc 1 (a still) or T,
    ``theta`` (B, T, 2, 3) on the canvas' device -> (B, T, 3, H, W)."""
    b, tc, c, hc, wc = canvas.shape
    t = theta.shape[1]
    if tc == 1:
        # A still: stack the T frames' grids along the height and sample the canvas once,
        # rather than copying it T times.
        grid = F.affine_grid(theta.reshape(b * t, 2, 3), [b * t, c, h, w], align_corners=False)
        grid = grid.view(b, t * h, w, 2)
        out = F.grid_sample(canvas[:, 0], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return out.view(b, c, t, h, w).permute(0, 2, 1, 3, 4)
    grid = F.affine_grid(theta.reshape(b * t, 2, 3), [b * t, c, h, w], align_corners=False)
    out = F.grid_sample(canvas.reshape(b * t, c, hc, wc), grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return out.view(b, t, c, h, w)


def bars(rng: torch.Generator, frames: Tensor, probability: float = 0.2) -> Tensor:
    """Letterbox or pillarbox some clips, as when a 4:3, square, portrait or very wide source
    is fitted into the output frame. (B, T, 3, H, W) -> same."""
    b, _, _, h, w = frames.shape
    aspects = torch.tensor([4 / 3, 1.0, 9 / 16, 21 / 9, 2.39])
    pick = aspects[torch.randint(len(aspects), (b,), generator=rng)]
    use = torch.rand(b, generator=rng) < probability
    out = frames.clone()
    for i in torch.nonzero(use).flatten().tolist():  # a loop over clips, not pixels
        src = float(pick[i])
        if src < w / h:  # narrower source: black bars left and right
            keep = max(2, round(h * src))
            pad = (w - keep) // 2
            out[i, ..., :pad] = 0
            out[i, ..., pad + keep:] = 0
        else:  # wider source: bars top and bottom
            keep = max(2, round(w / src))
            pad = (h - keep) // 2
            out[i, ..., :pad, :] = 0
            out[i, ..., pad + keep:, :] = 0
    return out


def moving_objects(rng: torch.Generator, frames: Tensor, times: Tensor, counts: Tensor) -> Tensor:
    """Draw up to three moving objects (soft discs, boxes and rings with a shaded colour) over
    each clip. ``frames`` (B, T, 3, H, W), ``times`` (B, T) seconds, ``counts`` (B,) -> same."""
    b, t, _, h, w = frames.shape
    dev = frames.device
    k = 3
    x = ((torch.arange(w, device=dev) + 0.5 - w / 2) / h).view(1, 1, 1, 1, w)  # frame heights
    y = ((torch.arange(h, device=dev) + 0.5) / h).view(1, 1, 1, h, 1)
    tt = to_device(times - times[:, :1], dev).view(b, t, 1, 1, 1)

    def per(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return to_device(_rand(rng, b, k, *shape, lo=lo, hi=hi), dev)

    cx0, cy0 = (per(lo=-0.5, hi=0.5) * w / h).view(b, 1, k, 1, 1), per().view(b, 1, k, 1, 1)
    vx, vy = per(lo=-0.6, hi=0.6).view(b, 1, k, 1, 1), per(lo=-0.4, hi=0.4).view(b, 1, k, 1, 1)
    r = per(lo=0.04, hi=0.18).view(b, 1, k, 1, 1)
    kind = to_device(torch.randint(3, (b, k), generator=rng), dev).view(b, 1, k, 1, 1)
    colour = per(3).view(b, 1, k, 3, 1, 1)
    present = to_device((torch.arange(k).view(1, k) < counts.view(b, 1)).float(), dev).view(b, 1, k, 1, 1)
    dx, dy = x - (cx0 + vx * tt), y - (cy0 + vy * tt)  # (B, T, K, H, W)
    dist = torch.sqrt(dx**2 + dy**2)
    px = 1.0 / h
    disc = ((r - dist) / px + 0.5).clamp(0, 1)
    box = ((r - torch.maximum(dx.abs(), dy.abs())) / px + 0.5).clamp(0, 1)
    ring = disc * ((dist - 0.6 * r) / px + 0.5).clamp(0, 1)
    mask = torch.where(kind == 0, disc, torch.where(kind == 1, box, ring)) * present
    shade = (1.0 - 0.5 * (dx + dy) / (2 * r)).clamp(0.4, 1.3).unsqueeze(3)  # lit from the top left
    out = frames
    for i in range(k):  # back to front over the three object slots
        out = out * (1 - mask[:, :, i : i + 1]) + (colour[:, :, i] * shade[:, :, i]).clamp(0, 1) * mask[:, :, i : i + 1]
    return out
