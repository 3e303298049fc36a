"""Procedural scenes drawn in torch, batched: a face cam (head and shoulders in a room) and
stills (gradients, shapes, textures).

Every random choice comes from the caller's ``torch.Generator`` (on the CPU, so a seed gives
the same scenes on any device); drawing happens on ``device``. Edges are anti-aliased over
about one pixel so that slow motion changes pixels smoothly rather than in steps. Geometry is
in frame heights (y from 0 at the top to 1 at the bottom, x centred on 0), so scenes keep
their proportions at any size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..host import to_device


def _rand(rng: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=rng)


def _coords(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in frame heights: X (1, 1, 1, W) centred, Y (1, 1, H, 1)."""
    y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2) / h
    return x.view(1, 1, 1, w), y.view(1, 1, h, 1)


def _ellipse(X: Tensor, Y: Tensor, cx: Tensor, cy: Tensor, rx: Tensor, ry: Tensor, px: float) -> Tensor:
    """Soft ellipse mask; centres and radii broadcast against (N, 1, H, W); ``px`` is one
    pixel in frame heights (the width of the anti-aliased rim)."""
    e = torch.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
    return ((1 - e) * torch.minimum(rx, ry) / px + 0.5).clamp(0, 1)


def _box(X: Tensor, Y: Tensor, x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor, px: float) -> Tensor:
    inside = torch.minimum(torch.minimum(X - x0, x1 - X), torch.minimum(Y - y0, y1 - Y))
    return (inside / px + 0.5).clamp(0, 1)


def _mix(img: Tensor, colour: Tensor, mask: Tensor) -> Tensor:
    return img * (1 - mask) + colour * mask


def facecam(times: Tensor, rng: torch.Generator, h: int, w: int, device: torch.device) -> Tensor:
    """Head-and-shoulders clips: ``times`` (B, T) seconds -> (B, T, 3, H, W) in [0, 1].

    Per clip: wall colour and pattern, a picture or window on the wall, a lamp glow, skin, hair
    and shirt colours, head size and place, sway, blinking and talking.
    """
    b, t = times.shape
    n = b * t
    px = 1.0 / h
    X, Y = _coords(h, w, device)

    def clip(v: Tensor) -> Tensor:  # per-clip (B, ...) values -> (N, ..., 1, 1) broadcastable
        v = to_device(v, device)
        return v.repeat_interleave(t, 0).view(n, *v.shape[1:], 1, 1) if v.dim() > 1 else \
            v.repeat_interleave(t, 0).view(n, 1, 1, 1)

    tt = to_device(times, device).reshape(n, 1, 1, 1)
    aspect = w / h
    # The room.
    wall = clip(_rand(rng, b, 3, lo=0.25, hi=0.85))
    fx, fy, ph = clip(_rand(rng, b, lo=8, hi=40)), clip(_rand(rng, b, lo=8, hi=40)), clip(_rand(rng, b, hi=6.3))
    texture = 0.08 * torch.sin(X * fx + ph) * torch.sin(Y * fy) + 0.15 * (Y - 0.5)
    img = (wall + texture).expand(n, 3, h, w)
    side = torch.where(torch.rand(b, generator=rng) < 0.5, -1.0, 1.0)
    pcx = clip(side * _rand(rng, b, lo=0.35, hi=0.6) * aspect)
    pcy = clip(_rand(rng, b, lo=0.15, hi=0.4))
    pw, ph_ = clip(_rand(rng, b, lo=0.12, hi=0.3)), clip(_rand(rng, b, lo=0.1, hi=0.25))
    img = _mix(img, clip(_rand(rng, b, 3)), _box(X, Y, pcx - pw, pcy - ph_, pcx + pw, pcy + ph_, px))
    lamp_x, lamp_y = clip((_rand(rng, b) - 0.5) * aspect), clip(_rand(rng, b, lo=0.0, hi=0.4))
    glow = torch.exp(-((X - lamp_x) ** 2 + (Y - lamp_y) ** 2) / 0.08) * clip(_rand(rng, b, hi=0.35))
    img = img + glow * clip(torch.tensor([1.0, 0.9, 0.7]).expand(b, 3))
    # The person.
    k = clip(_rand(rng, b, lo=0.75, hi=1.3))  # head size
    sway_a, sway_p = clip(_rand(rng, b, hi=0.15)), clip(_rand(rng, b, lo=1.5, hi=4.0))
    sway_ph = clip(_rand(rng, b, hi=6.3))
    cx = clip(_rand(rng, b, lo=-0.35, hi=0.35)) + sway_a * torch.sin(2 * math.pi * tt / sway_p + sway_ph)
    bob = 0.03 * torch.sin(2 * math.pi * tt / (0.6 * sway_p) + 2 * sway_ph)
    cy = 0.42 + bob + clip(_rand(rng, b, lo=-0.05, hi=0.08))
    shirt = clip(_rand(rng, b, 3, hi=0.8))
    img = _mix(img, shirt, _ellipse(X, Y, cx, 1.05 + 0.1 * (k - 1), 0.5 * k, 0.3 * k, px))
    tone = clip(_rand(rng, b))
    skin = clip(torch.tensor([0.96, 0.78, 0.66]).expand(b, 3)) * (1 - tone) + \
        clip(torch.tensor([0.42, 0.27, 0.18]).expand(b, 3)) * tone
    hair = clip(_rand(rng, b, 3, hi=0.45) * torch.tensor([1.0, 0.8, 0.6]))
    long_hair = clip((torch.rand(b, generator=rng) < 0.4).float())
    rx, ry = 0.18 * k, 0.23 * k
    img = _mix(img, hair, long_hair * _ellipse(X, Y, cx, cy + 0.08 * k, rx * 1.25, ry * 1.15, px))
    shade = 0.92 - 0.25 * (X - cx) / rx * clip(_rand(rng, b, lo=-1, hi=1))
    img = _mix(img, skin * shade, _ellipse(X, Y, cx, cy, rx, ry, px))
    img = _mix(img, hair, _ellipse(X, Y, cx, cy - 0.1 * k, rx * 1.02, ry * 0.55, px) * (Y < cy - 0.1 * k).float())
    blink_p, blink_ph = clip(_rand(rng, b, lo=2.0, hi=5.0)), clip(_rand(rng, b, hi=5.0))
    open_ = torch.where(torch.remainder(tt + blink_ph, blink_p) > 0.15, 1.0, 0.15)
    for dx in (-0.065, 0.065):
        eye = _ellipse(X, Y, cx + dx * k, cy - 0.03 * k, 0.022 * k, 0.02 * k * open_, px)
        img = _mix(img, torch.full_like(shirt, 0.08), eye)
    talk = clip(_rand(rng, b, hi=1.0)) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3.1 * tt + sway_ph)).clamp(0, 1)
    mouth = _ellipse(X, Y, cx, cy + 0.1 * k, 0.055 * k, (0.008 + 0.02 * talk) * k, px)
    img = _mix(img, clip(torch.tensor([0.5, 0.18, 0.18]).expand(b, 3)), mouth)
    light = clip(_rand(rng, b, lo=0.75, hi=1.15))
    return (img * light).clamp(0, 1).view(b, t, 3, h, w)


def _gradient(rng: torch.Generator, b: int, X: Tensor, Y: Tensor, device: torch.device) -> Tensor:
    c0, c1 = to_device(_rand(rng, b, 3, 1, 1), device), to_device(_rand(rng, b, 3, 1, 1), device)
    angle = to_device(_rand(rng, b, 1, 1, hi=2 * math.pi), device)
    u = X * torch.cos(angle).view(b, 1, 1, 1) + (Y - 0.5) * torch.sin(angle).view(b, 1, 1, 1)
    u = (u + 0.9).clamp(0, 1.8) / 1.8
    return c0.view(b, 3, 1, 1) * (1 - u) + c1.view(b, 3, 1, 1) * u


def still_scenes(rng: torch.Generator, b: int, h: int, w: int, device: torch.device) -> Tensor:
    """(B, 3, H, W) stills in [0, 1]: per clip a gradient with scattered shapes, or a texture
    of crossed gratings and blotches over a gradient."""
    X, Y = _coords(h, w, device)
    px = 1.0 / h
    aspect = w / h
    img = _gradient(rng, b, X, Y, device)
    # Texture: three gratings of random direction and frequency plus low-frequency blotches.
    textured = to_device((torch.rand(b, generator=rng) < 0.5).float(), device).view(b, 1, 1, 1)
    grating = torch.zeros(b, 1, h, w, device=device)
    for _ in range(3):
        a = to_device(_rand(rng, b, hi=math.pi), device).view(b, 1, 1, 1)
        f = to_device(_rand(rng, b, lo=6, hi=60), device).view(b, 1, 1, 1)
        grating = grating + torch.sin((X * torch.cos(a) + Y * torch.sin(a)) * f + _rand(rng, 1).item() * 6)
    blotch = torch.nn.functional.interpolate(to_device(_rand(rng, b, 3, 6, 10), device), size=(h, w), mode="bicubic",
                                             align_corners=False)
    img = img * (1 - 0.5 * textured) + textured * (0.5 * blotch + 0.12 * grating).clamp(0, 1)
    # Shapes: a dozen soft circles and boxes composited back to front (a loop over shapes).
    for _ in range(12):
        cx = to_device((_rand(rng, b) - 0.5) * aspect, device).view(b, 1, 1, 1)
        cy = to_device(_rand(rng, b), device).view(b, 1, 1, 1)
        r = to_device(_rand(rng, b, lo=0.03, hi=0.22), device).view(b, 1, 1, 1)
        r2 = r * to_device(_rand(rng, b, lo=0.5, hi=1.5), device).view(b, 1, 1, 1)
        colour = to_device(_rand(rng, b, 3), device).view(b, 3, 1, 1)
        is_box = to_device((torch.rand(b, generator=rng) < 0.5).float(), device).view(b, 1, 1, 1)
        present = to_device((torch.rand(b, generator=rng) < 0.8).float(), device).view(b, 1, 1, 1) * (1 - 0.7 * textured)
        box = _box(X, Y, cx - r, cy - r2, cx + r, cy + r2, px)
        mask = is_box * box + (1 - is_box) * _ellipse(X, Y, cx, cy, r, r2, px)
        img = _mix(img, colour, mask * present)
    return img.clamp(0, 1)
